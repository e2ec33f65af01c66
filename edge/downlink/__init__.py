"""The downlink: what each tenant's cloud platform sends the gateway, over a connection the gateway opens.

Commands (point writes, module commands), configuration deployments and entitlement answers, each signed by
the platform with the tenant's key; the wire protocol is in cloud_sync/README.md ("Downlink"), beside the
uplink's. A kernel package (not part of the cloud_sync plug-in) because it changes what only the kernel may:
the configuration, the running devices and the tenants' entitlements.
"""

from edge.downlink.service import Downlink, DownlinkServices

__all__ = ["Downlink", "DownlinkServices"]

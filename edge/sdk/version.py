"""The kernel API version that plug-in manifests name in `kernel_api` (a SemVer range, e.g. ">=1.0,<2")."""

__all__ = ["KERNEL_API_VERSION"]

# 1.1: ModuleContext.every; 1.2: SupportsValueRange (drivers); 1.3: point lists, semantic tags;
# 1.4: StateStore (ModuleContext.store on either storage backend); 1.5: DeviceSession.write may return a note
KERNEL_API_VERSION = "1.5"

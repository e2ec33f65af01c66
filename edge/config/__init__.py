"""Gateway configuration: TOML models and the validating loader."""

from edge.config.loader import LoadedConfig, load_config, parse_profile
from edge.config.models import BusConfig, DeviceConfig, GatewayConfig, StorageConfig, TenantConfig

__all__ = [
    "BusConfig",
    "DeviceConfig",
    "GatewayConfig",
    "LoadedConfig",
    "StorageConfig",
    "TenantConfig",
    "load_config",
    "parse_profile",
]

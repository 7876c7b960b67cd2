"""The OFA MobileNetV3 supernet and its parts (official module names), extraction, BN re-calibration."""

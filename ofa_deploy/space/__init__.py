"""The OFA MobileNetV3 search space: arch encoding, block geometry, operators (latency keys), analytics."""

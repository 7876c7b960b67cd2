"""Android phones over ADB: TFLite's ``benchmark_model`` on the phone's CPU, driven by adb-shell."""

# GridTwin node firmware.
VERSION = "0.1.0"

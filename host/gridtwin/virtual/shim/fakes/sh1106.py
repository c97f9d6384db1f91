# SH1106 OLED controller (Sino Wealth SH1106 data sheet): as the SSD1306 model (fakes/ssd1306.py)
# but with 132 columns of RAM of which the panel shows 2..129, page addressing only, and its
# DC-DC converter (0xAD 0x8B) instead of the SSD1306's charge pump.
# World spec: {"model": "sh1106", "addr": 60, "frames": true}
from fakes.ssd1306 import Device as SSD1306


class Device(SSD1306):
    RAM_COLS = 132
    VISIBLE0 = 2
    SH1106 = True

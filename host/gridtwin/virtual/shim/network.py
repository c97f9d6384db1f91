# Shim for `network` on a virtual board: a station interface whose link follows the world's "wlan"
# entry (credentials, RSSI, connect time, windows where the link is down).
import _world as W
from _world import clock as _clock

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204


def _spec():
    return W.world.get("wlan", {})


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._want = None
        self._since = 0
        self._hostname = "esp32"

    def active(self, v=None):
        if v is None:
            return self._active
        self._active = bool(v)
        if not v:
            self._want = None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._want = (ssid, key)
        self._since = _clock.world_ms()

    def disconnect(self):
        self._want = None

    def status(self, param=None):
        s = _spec()
        if param == "rssi":
            if self.isconnected():
                return int(W.value(s.get("rssi", -60)))
            raise OSError("STA not connected")
        if param is not None:
            raise ValueError("unknown status param")
        if self._want is None or not self._active:
            return STAT_IDLE
        ssid, key = self._want
        if "ssid" in s and ssid != s["ssid"]:
            return STAT_NO_AP_FOUND
        if "psk" in s and key != s["psk"]:
            return STAT_WRONG_PASSWORD
        if not W.link_up():
            return STAT_BEACON_TIMEOUT
        if _clock.world_ms() - self._since < s.get("connect_ms", 1000):
            return STAT_CONNECTING
        return STAT_GOT_IP

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self, cfg=None):
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if kw:
            self._hostname = kw.get("hostname", kw.get("dhcp_hostname", self._hostname))
            return None
        key = args[0]
        if key == "mac":
            return W.world.get("board", {}).get("unique_id", "246f28a1b2c3")
        if key in ("hostname", "dhcp_hostname"):
            return self._hostname
        if key == "ssid":
            return self._want[0] if self._want else ""
        raise ValueError("unknown config param")


def hostname(name=None):
    if name is None:
        return "esp32"

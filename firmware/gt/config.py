# The node config: a JSON file on the board's flash (config.json), rendered by the host from
# site.toml and the board file (`gridtwin deploy`). It is validated against SCHEMA below before the
# node starts; the first problem becomes one ConfigError line naming the key and the fix, and the
# node waits in safe mode instead of crashing. New settings are new rows in schema().
#
# A row is  key: (type, default, check, help)  where default REQUIRED means the key must be given,
# type is int/float/str/bool/list/dict or a nested schema (a dict of rows), and check(value) returns
# None or what is wrong.
#
# The host renders config.json with these types, defaults and ranges: it runs schema() under CPython
# (gridtwin/fwsource.py), so this module stays plain Python (no micropython-only imports).
import json

PATH = "config.json"
REQUIRED = "\x00required"
FIX = "fix it in site.toml and run `gridtwin deploy`"


class ConfigError(Exception):
    def __init__(self, key, problem, fix=FIX):
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__("%s: %s: %s (%s)" % (PATH, key, problem, fix))


def between(lo, hi):
    def check(v):
        if not lo <= v <= hi:
            return "must be between %s and %s, got %s" % (lo, hi, v)

    return check


def ident(v):
    if not 1 <= len(v) <= 32:
        return "must be 1 to 32 characters, got %r" % v
    for c in v:
        if not (c.isalpha() or c.isdigit() or c in "_-"):
            return "may hold only letters, digits, '_' and '-', got %r" % v


def one_of(*names):
    def check(v):
        if v not in names:
            return "must be one of %s, got %r" % (", ".join(str(n) for n in names), v)

    return check


def schema():
    # Built on demand and dropped after validation: the schema costs RAM only while it is used.
    pins = {
        "i2c_scl": (int, 22, between(0, 48), "I2C clock pin"),
        "i2c_sda": (int, 21, between(0, 48), "I2C data pin"),
        "i2c_freq": (int, 400000, between(10000, 1000000), "I2C clock in Hz"),
        "onewire": (int, -1, between(-1, 48), "1-Wire data pin, -1 when unused"),
        "led": (int, -1, between(-1, 48), "status LED pin, -1 when none"),
        "button": (int, -1, between(-1, 48), "button pin, -1 when none"),
    }
    display = {
        "kind": (str, "ssd1306", one_of("ssd1306", "sh1106", "none"), "OLED controller"),
        "addr": (int, 0x3C, between(0, 127), "OLED I2C address"),
        "page_ms": (int, 4000, between(500, 60000), "how long each page shows"),
    }
    return {
        "v": (int, 1, one_of(1), "config format version"),
        "node": (str, REQUIRED, ident, "node id (the certificate CN)"),
        "site": (str, REQUIRED, ident, "site id"),
        "root": (str, REQUIRED, None, "MQTT topic root, e.g. gridtwin/demo"),
        "role": (str, REQUIRED, None, "what the node is: a sensing role or a simulated component"),
        "board": (str, "esp32s3", ident, "board file name"),
        "sample_ms": (int, 1000, between(50, 3600000), "sampling interval in ms"),
        "wdt_ms": (int, 10000, between(2000, 120000), "hardware watchdog timeout in ms"),
        "crash_limit": (int, 3, between(1, 50), "crash boots in a row before safe mode"),
        "stable_ms": (int, 60000, between(1000, 3600000), "run time after which a boot is good"),
        "queue": (int, 16, between(4, 4096), "readings held in RAM before spilling to flash"),
        "trace": (bool, False, None, "print every sample on the REPL"),
        "pins": (pins, {}, None, "board pins"),
        "display": (display, {"kind": "none"}, None, "the OLED"),
        "sensors": (list, [], None, "sensors: a list of {id, type, ...}"),
        "params": (dict, {}, None, "role parameters"),
        # the link to the broker (issue #4): no mqtt.host -> no transport, readings stay in RAM
        "wifi": (
            {
                "ssid": (str, "", None, "Wi-Fi network, empty on the unix port"),
                "psk": (str, "", None, "Wi-Fi password"),
            },
            {},
            None,
            "Wi-Fi station",
        ),
        "mqtt": (
            {
                "host": (str, "", None, "broker host name or address (the Pi), empty: no broker"),
                "port": (int, 8883, between(1, 65535), "broker TLS port"),
                "server_hostname": (
                    str,
                    "",
                    None,
                    "name on the broker certificate (default: host)",
                ),
                "keepalive": (int, 30, between(5, 3600), "MQTT keepalive in s"),
                "ca": (str, "ca.der", None, "site CA certificate (DER) on flash"),
                "cert": (str, "cert.der", None, "node certificate (DER) on flash"),
                "key": (str, "key.der", None, "node key (DER, SEC1) on flash"),
                "wifi_ms": (int, 20000, between(1000, 120000), "deadline to join Wi-Fi"),
                "tcp_ms": (int, 5000, between(100, 60000), "deadline for the TCP connect"),
                "tls_ms": (int, 15000, between(100, 120000), "deadline for the TLS handshake"),
                "connack_ms": (int, 5000, between(100, 60000), "deadline for the CONNACK"),
                "backoff_max_ms": (
                    int,
                    60000,
                    between(1000, 3600000),
                    "longest wait between retries",
                ),
                "replay_per_s": (int, 20, between(1, 10000), "backlog readings replayed a second"),
                "window": (
                    int,
                    8,
                    between(1, 16),
                    "readings in flight at once (QoS 1), each until its PUBACK",
                ),
            },
            {},
            None,
            "the broker",
        ),
        "ntp": (str, "", None, "NTP server (default: the broker host)"),
        "spill_kb": (int, 64, between(0, 1024), "outbox spill file on flash in KB, 0: none"),
        "health_s": (
            int,
            60,
            between(0, 86400),
            "node health on the status topic every N s, 0: birth only",
        ),
        "log_level": (
            str,
            "warn",
            one_of("info", "warn", "error"),
            "least level sent on the log topic",
        ),
    }


_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


def _suggest(key, choices):
    # the closest known key, for "did you mean"
    best, score = None, 3
    for c in choices:
        d = _distance(key, c)
        if d < score:
            best, score = c, d
    return best


def _distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a):
        cur = [i + 1]
        for j, cb in enumerate(b):
            cur.append(min(prev[j + 1] + 1, cur[j] + 1, prev[j] + (ca != cb)))
        prev = cur
    return prev[-1]


def _type_ok(t, v):
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, t)


def validate(doc, schema, prefix=""):
    """Return a new dict with defaults filled in, or raise ConfigError for the first problem."""
    if not isinstance(doc, dict):
        raise ConfigError(prefix or "(top)", "must be a table of keys")
    for k in doc:
        if k not in schema:
            s = _suggest(k, schema)
            raise ConfigError(
                prefix + k, "unknown key" + (" (did you mean '%s'?)" % s if s else "")
            )
    out = {}
    for k, row in schema.items():
        t, default, check, _help = row
        key = prefix + k
        if k not in doc:
            if default == REQUIRED:
                raise ConfigError(key, "missing (%s)" % _help)
            v = default
        else:
            v = doc[k]
        if isinstance(t, dict):
            v = validate(v, t, key + ".")
        elif not _type_ok(t, v):
            raise ConfigError(key, "must be %s, got %r" % (_NAMES.get(t, t), v))
        if check is not None:
            why = check(v)
            if why:
                raise ConfigError(key, why)
        out[k] = v
    return out


def load(path=PATH):
    """Read and validate the node config; ConfigError says what is wrong. The caller should
    drop this module afterwards (startup does): nothing at run time needs it."""
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        raise ConfigError("(file)", "not found on the board", "deploy it with `gridtwin deploy`")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ConfigError("(file)", "is not valid JSON", "re-render it with `gridtwin deploy`")
    cfg = validate(doc, schema())
    _sensors(cfg["sensors"])
    from gt.roles import ROLES

    if cfg["role"] not in ROLES:
        raise ConfigError(
            "role", "unknown role %r (known: %s)" % (cfg["role"], ", ".join(sorted(ROLES)))
        )
    cfg["hash"] = _hash(raw)
    return cfg


def _sensors(specs):
    # each sensor type brings its own rows (gt/drivers/options.py, generated from the host's
    # catalog)
    from gt.drivers.options import TYPES, rows as type_rows

    for i, s in enumerate(specs):
        key = "sensors[%d]" % i
        if not isinstance(s, dict):
            raise ConfigError(key, "must be a table like {id, type, ...}")
        t = s.get("type")
        if t not in TYPES:
            raise ConfigError(
                key + ".type", "unknown sensor type %r (known: %s)" % (t, ", ".join(TYPES))
            )
        rows = {"id": (str, REQUIRED, ident, "sensor id"), "type": (str, None, None, "")}
        rows.update(type_rows(t, between, one_of))
        specs[i] = validate(s, rows, key + ".")
    ids = [s["id"] for s in specs]
    for x in ids:
        if ids.count(x) > 1:
            raise ConfigError("sensors", "sensor id %r appears twice" % x)


def _hash(raw):
    import hashlib
    import binascii

    return binascii.hexlify(hashlib.sha256(raw).digest()[:4]).decode()

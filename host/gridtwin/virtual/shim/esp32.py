# Shim for the `esp32` module: the few calls GridTwin uses.
import _world as W


def mcu_temperature():
    return int(W.value(W.world.get("board", {}).get("mcu_temp_c", 45)))


def raw_temperature():
    return int(mcu_temperature() * 9 / 5 + 32)


def idf_heap_info(caps=0):
    return []


HEAP_DATA = 4
HEAP_EXEC = 1


class NVS:
    # namespaced key/value store; the shim keeps it in the board state so it survives resets
    def __init__(self, namespace):
        self._ns = namespace

    def _all(self):
        return W.state.setdefault("nvs", {}).setdefault(self._ns, {})

    def set_i32(self, key, value):
        self._all()[key] = int(value)

    def get_i32(self, key):
        try:
            return self._all()[key]
        except KeyError:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND

    def set_blob(self, key, value):
        self._all()[key] = bytes(value).hex()

    def get_blob(self, key, buf):
        v = bytes.fromhex(self._all()[key])
        buf[: len(v)] = v
        return len(v)

    def erase_key(self, key):
        self._all().pop(key, None)

    def commit(self):
        W.save_state()

# The board's buses and pins, built once from the config's "pins" and shared by every driver.
import machine


class Hardware:
    def __init__(self, pins):
        self.pins = pins
        self._i2c = {}
        self._ow = None
        led = pins.get("led", -1)
        self.led = machine.Pin(led, machine.Pin.OUT, value=0) if led >= 0 else None

    def i2c(self, bus=0):
        b = self._i2c.get(bus)
        if b is None:
            p = self.pins
            b = machine.I2C(
                bus,
                scl=machine.Pin(p["i2c_scl"]),
                sda=machine.Pin(p["i2c_sda"]),
                freq=p["i2c_freq"],
            )
            self._i2c[bus] = b
        return b

    def onewire(self):
        if self._ow is None:
            import onewire

            pin = self.pins.get("onewire", -1)
            if pin < 0:
                raise ValueError("no 1-Wire pin configured (pins.onewire)")
            self._ow = onewire.OneWire(machine.Pin(pin))
        return self._ow

    def blink(self, on):
        if self.led is not None:
            self.led.value(1 if on else 0)

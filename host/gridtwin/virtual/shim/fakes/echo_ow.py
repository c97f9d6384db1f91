# A minimal 1-Wire chip for testing the bus: function 0xBE returns `data` followed by its CRC-8.
from fakes.onewiredev import OneWireDevice
from onewire import crc8


class Device(OneWireDevice):
    def on_byte(self, b):
        if b == 0xBE:
            d = bytes.fromhex(self.spec["data"])
            self.reply(d + bytes((crc8(d),)))

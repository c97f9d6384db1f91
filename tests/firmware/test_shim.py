"""The fake hardware itself: chips answer at the register level, the world drives the board."""

import textwrap


def run_on_board(vboard, code, world):
    b = vboard(world=world)
    b.flash.joinpath("main.py").write_text(textwrap.dedent(code))
    rc = b.run(timeout=30)
    out = [ln for ln in b.lines if not ln.startswith("#world")]
    assert rc == 0, "\n".join(b.lines)
    return out


def test_lm75_registers_as_in_the_datasheet(vboard):
    out = run_on_board(
        vboard,
        """
        from machine import I2C, Pin
        i2c = I2C(0, scl=Pin(22), sda=Pin(21))
        print(i2c.scan())
        print(i2c.readfrom_mem(0x48, 0, 2).hex())      # Temp
        print(i2c.readfrom_mem(0x49, 0, 2).hex())      # negative Temp
        print(i2c.readfrom_mem(0x48, 3, 2).hex())      # Tos power-on default 80 degC
        i2c.writeto_mem(0x48, 1, b'\\x01')               # SHUTDOWN: Temp holds its value
        print(i2c.readfrom_mem(0x48, 1, 1).hex())
        i2c.writeto(0x48, b'\\x00')                      # pointer write, then a plain read
        print(i2c.readfrom(0x48, 2).hex())
        try:
            i2c.readfrom_mem(0x50, 0, 1)
        except OSError as e:
            print('nack', e.args[0])
    """,
        {
            "i2c": [
                {"model": "lm75", "addr": 0x48, "temp_c": 25.0},
                {"model": "lm75", "addr": 0x49, "temp_c": -25.0},
            ]
        },
    )
    # LM75A datasheet, Temp register table: +25 degC is the 11-bit value 0C8h and -25 degC is 738h,
    # both left-aligned in the 16-bit register (D15..D5): 0x1900 and 0xE700. A NACK is ENODEV.
    assert out == ["[72, 73]", "1900", "e700", "5000", "01", "1900", "nack 19"]


def test_world_schedules_link_drops_and_adc(vboard):
    out = run_on_board(
        vboard,
        """
        import network, time, machine
        w = network.WLAN(network.STA_IF)
        w.active(True)
        w.connect('plant', 'secret')
        adc = machine.ADC(machine.Pin(34))
        for _ in range(8):
            uv = round(adc.read_uv() / 1e6, 2)
            print(time.ticks_ms() // 1000 * 0, w.isconnected(), w.status(), uv)
            time.sleep(1)
        w2 = network.WLAN(network.STA_IF); w2.active(True); w2.connect('plant', 'wrong')
        print(w2.status() == network.STAT_WRONG_PASSWORD)
    """,
        {
            "clock": {"mode": "warp"},
            "wlan": {"ssid": "plant", "psk": "secret", "connect_ms": 1500, "down": [[3000, 5000]]},
            "adc": {"34": [[0, 0.5], [7000, 1.2]]},
        },
    )
    link = [ln.split()[1] for ln in out[:8]]
    assert link == ["False", "False", "True", "False", "False", "True", "True", "True"]
    assert [float(ln.split()[3]) for ln in out[:8]] == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    assert out[8] == "True"


def test_onewire_bus_selects_by_rom_and_reads_bytes(vboard):
    # A minimal scratchpad device, written as a test chip model, drives the bus protocol.
    out = run_on_board(
        vboard,
        """
        import onewire, machine
        ow = onewire.OneWire(machine.Pin(4))
        roms = ow.scan()
        print([bytes(r).hex() for r in roms])
        ow.select_rom(roms[1]); ow.writebyte(0xBE)
        buf = bytearray(3); ow.readinto(buf); print(buf.hex(), ow.crc8(buf[:2]) == buf[2])
        print(ow.reset(), onewire.crc8(b'\\x02\\x1c\\xb8\\x01\\x00\\x00\\x00') == 0xa2)
    """,
        {
            "onewire": [
                {"pin": 4, "model": "echo_ow", "rom": "2811223344556677", "data": "0102"},
                {"pin": 4, "model": "echo_ow", "rom": "2899887766554433", "data": "0a0b"},
            ]
        },
    )
    assert out[0] == "['2811223344556677', '2899887766554433']"
    data, crc_ok = out[1].split()
    assert data.startswith("0a0b") and crc_ok == "True"  # the second chip answered, CRC intact
    # Maxim AN27 example: ROM 02 1C B8 01 00 00 00 has CRC A2
    assert out[2] == "True True"

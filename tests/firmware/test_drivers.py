"""Sensor drivers against the register-level chip models, under the real MicroPython.

Each test runs the firmware's driver on a virtual board whose world holds the chip, and checks the
conversions against the data sheets' worked examples and edge values (negative current, overflow
flags, CRC errors, power-on values)."""

import textwrap

import pytest

PINS = "{'i2c_scl': 22, 'i2c_sda': 21, 'i2c_freq': 400000, 'onewire': 4, 'led': -1}"


def run_driver(vboard, code, world):
    """Run `code` on a board (with `hw`, a gt.hw.Hardware, and `show(label, value)` defined);
    return {label: value} as printed."""
    prelude = textwrap.dedent(f"""
        from gt.hw import Hardware
        hw = Hardware({PINS})
        def show(label, value):
            print('=', label, repr(value))
        def attempt(label, fn):
            try:
                show(label, fn())
            except (OSError, ValueError) as e:
                show(label, type(e).__name__ + ': ' + str(e))
    """)
    world = dict(world)
    world.setdefault("clock", {"mode": "warp"})
    b = vboard(world=world)
    b.flash.joinpath("main.py").write_text(prelude + textwrap.dedent(code))
    rc = b.run(timeout=30)
    assert rc == 0 and not b.grep("Traceback"), "\n".join(b.lines)
    out = {}
    for m in b.grep(r"^= (\S+) (.*)$"):
        out[m[1]] = eval(m[2])  # noqa: S307 - our own repr() output
    return out


def close(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_ina219_datasheet_calibration_example_and_edges(vboard):
    # INA219 data sheet, "Calibration Register and Scaling" example: 0.5 ohm shunt, 0.6 A expected
    # -> minimum LSB 18.3 uA, chosen 20 uA -> Cal = trunc(0.04096 / (20e-6 * 0.5)) = 4096, power
    # LSB 20 x 20 uA = 400 uW. The same Cal (4096) for a 0.1 ohm shunt and 2 A (LSB 100 uA).
    out = run_driver(
        vboard,
        """
        from gt.drivers.ina219 import INA219
        i2c = hw.i2c(0)
        a = INA219(i2c, 0x40, 0.5, 0.6)
        show('lsb', a.lsb); show('cal', a.cal)
        show('cal_reg', i2c.readfrom_mem(0x40, 5, 2).hex())
        show('fwd', a.read())
        show('shunt_reg', i2c.readfrom_mem(0x40, 1, 2).hex())
        b = INA219(i2c, 0x41, 0.5, 0.6)
        show('rev', b.read())
        show('rev_shunt', i2c.readfrom_mem(0x41, 1, 2).hex())
        c = INA219(i2c, 0x44, 0.5, 0.6)
        attempt('ovf', c.read)
        d = INA219(i2c, 0x45, 0.1, 2.0)
        show('d', (d.lsb, d.cal, d.read()))
        i2c.writeto_mem(0x40, 0, b'\\x80\\x00')   # RST, as after a power glitch: Cal back to 0
        attempt('reset', a.read)
        show('after', a.read())
    """,
        {
            "i2c": [
                {
                    "model": "ina219",
                    "addr": 0x40,
                    "shunt_ohm": 0.5,
                    "current_a": 0.3,
                    "bus_v": 12.0,
                },
                {
                    "model": "ina219",
                    "addr": 0x41,
                    "shunt_ohm": 0.5,
                    "current_a": -0.3,
                    "bus_v": 12.0,
                },
                {
                    "model": "ina219",
                    "addr": 0x44,
                    "shunt_ohm": 0.5,
                    "current_a": 0.7,
                    "bus_v": 12.0,
                },
                {
                    "model": "ina219",
                    "addr": 0x45,
                    "shunt_ohm": 0.1,
                    "current_a": 1.25,
                    "bus_v": 5.0,
                },
            ]
        },
    )
    assert out["lsb"] == pytest.approx(20e-6) and out["cal"] == 4096 and out["cal_reg"] == "1000"
    # 0.3 A through 0.5 ohm = 150 mV = 15000 x 10 uV; Current = 15000 * 4096 / 4096 -> 0.3 A;
    # Power = 15000 * 3000 / 5000 = 9000 x 400 uW = 3.6 W
    assert out["shunt_reg"] == "3a98" and close(out["fwd"], (12.0, 0.3, 3.6), 1e-9)
    # reverse current: two's complement shunt register, negative current, power signed to match
    assert out["rev_shunt"] == "c568" and close(out["rev"], (12.0, -0.3, -3.6), 1e-9)
    # 0.7 A makes 350 mV, beyond the PGA's 320 mV: OVF set, the reading refused
    assert out["ovf"].startswith("ValueError: overflow")
    lsb, cal, vals = out["d"]
    assert lsb == pytest.approx(100e-6) and cal == 4096 and close(vals, (5.0, 1.25, 6.25), 1e-9)
    assert out["reset"].startswith("ValueError: lost its calibration")
    assert close(out["after"], (12.0, 0.3, 3.6), 1e-9)


def test_ina226_datasheet_example_registers_and_overflow(vboard):
    # INA226 data sheet example: 2 mohm shunt, Current_LSB 1 mA -> CAL = 0.00512 / (1e-3 * 2e-3)
    # = 2560 (0x0A00); 10 A makes VSHUNT = 8000 (0x1F40, 20 mV) -> Current 10000 (0x2710) = 10 A;
    # VBUS 12 V = 9600 (0x2580) -> Power = 10000 * 9600 / 20000 = 4800 (0x12C0) x 25 mW = 120 W.
    out = run_driver(
        vboard,
        """
        from gt.drivers.ina226 import INA226
        i2c = hw.i2c(0)
        a = INA226(i2c, 0x40, 0.002, 20.0)
        show('lsb_cal', (a.lsb, a.cal))
        show('regs', [i2c.readfrom_mem(0x40, r, 2).hex() for r in (1, 2, 4, 3, 5)])
        show('read', a.read())
        show('neg', INA226(i2c, 0x41, 0.002, 20.0).read())
        attempt('ovf', INA226(i2c, 0x42, 0.002, 20.0).read)
        attempt('wrong_chip', lambda: INA226(i2c, 0x48, 0.002, 20.0))
    """,
        {
            "i2c": [
                {
                    "model": "ina226",
                    "addr": 0x40,
                    "shunt_ohm": 0.002,
                    "current_a": 10.0,
                    "bus_v": 12.0,
                },
                {
                    "model": "ina226",
                    "addr": 0x41,
                    "shunt_ohm": 0.002,
                    "current_a": -2.5,
                    "bus_v": 30.0,
                },
                {
                    "model": "ina226",
                    "addr": 0x42,
                    "shunt_ohm": 0.002,
                    "current_a": 40.0,
                    "bus_v": 12.0,
                },
                {"model": "lm75", "addr": 0x48, "temp_c": 20.0},
            ]
        },
    )
    assert out["lsb_cal"][0] == pytest.approx(1e-3) and out["lsb_cal"][1] == 2560
    assert out["regs"] == ["1f40", "2580", "2710", "12c0", "0a00"]
    assert close(out["read"], (12.0, 10.0, 120.0), 1e-9)
    # -2.5 A at 30 V: the current register goes negative; power is the magnitude, signed by us
    assert close(out["neg"], (30.0, -2.5, -75.0), 1e-9)
    # 40 A: 80 mV fits the shunt range, but Current = 32000 * 2560 / 2048 = 40000 > 32767
    assert out["ovf"].startswith("ValueError: overflow")
    assert out["wrong_chip"].startswith("ValueError: not an INA226")


def test_ade7953_rms_power_pf_and_frequency(vboard):
    # Front end: 1 Mohm + 1 kohm divider (ratio 1001), CT 2000:1 on a 10 ohm burden (0.005 V/A).
    # Line frequency from PERIOD: 223.75 kHz / (PERIOD + 1); 50 Hz -> 4474.
    out = run_driver(
        vboard,
        """
        from gt.drivers.ade7953 import ADE7953
        i2c = hw.i2c(0)
        m = ADE7953(i2c, 1001.0, 0.005)
        show('unlocked', i2c.readfrom_mem(0x38, 0x120, 2, addrsize=16).hex())
        show('period', int.from_bytes(i2c.readfrom_mem(0x38, 0x10E, 2, addrsize=16), 'big'))
        show('r1', m.read())
        import time
        time.sleep_ms(10000)
        show('r2', m.read())
    """,
        {
            "i2c": [
                {
                    "model": "ade7953",
                    "addr": 0x38,
                    "v_div": 1001.0,
                    "i_ohm": 0.005,
                    "v_rms": 230.0,
                    "i_rms": [[0, 5.0], [10000, 20.0]],
                    "pf": [[0, 0.95], [10000, -0.5]],
                    "hz": [[0, 50.0], [10000, 49.8]],
                }
            ]
        },
    )
    assert out["unlocked"] == "0030"  # the data sheet's required setting went through the unlock
    assert out["period"] == 4474
    v, a, w, pf, hz = out["r1"]
    assert v == pytest.approx(230.0, abs=0.001) and a == pytest.approx(5.0, abs=1e-5)
    assert w == pytest.approx(230 * 5 * 0.95, abs=0.01) and pf == pytest.approx(0.95, abs=2**-15)
    assert hz == pytest.approx(50.0, abs=0.006)
    v, a, w, pf, hz = out["r2"]
    # exporting: power and power factor negative; 49.8 Hz within one PERIOD step (~0.011 Hz)
    assert w == pytest.approx(-230 * 20 * 0.5, abs=0.05) and pf == pytest.approx(-0.5, abs=2**-15)
    assert hz == pytest.approx(49.8, abs=0.006)


def test_bme280_datasheet_compensation_example(vboard):
    # Bosch's worked example (BMP280 data sheet, same T/P formulas as the BME280): with its
    # trimming values, adc_T = 519888 -> 25.08 degC (t_fine 128422) and adc_P = 415148 ->
    # 100653.27 Pa. The example is worked in double precision; the driver's 64-bit integer
    # version (Q24.8 Pa) lands within 0.02 Pa of it, far below the sensor's 1.7 Pa resolution.
    out = run_driver(
        vboard,
        """
        from gt.drivers.bme280 import BME280
        i2c = hw.i2c(0)
        s = BME280(i2c, 0x76)
        show('example', s.read())
        show('tfine', s.temperature(519888)[0])
        show('world', BME280(i2c, 0x77).read())
        show('ctrl', i2c.readfrom_mem(0x76, 0xF2, 4).hex())
    """,
        {
            "i2c": [
                {"model": "bme280", "addr": 0x76, "raw": {"t": 519888, "p": 415148, "h": 30000}},
                {
                    "model": "bme280",
                    "addr": 0x77,
                    "temp_c": -12.5,
                    "rh": 87.0,
                    "pressure_pa": 95000,
                },
            ]
        },
    )
    t, rh, p = out["example"]
    assert t == 25.08 and p == pytest.approx(100653.27, abs=0.02) and out["tfine"] == 128422
    # humidity has no worked example: check the integer result against the data sheet's
    # double-precision formula (BME280 data sheet, section 8.1), written out independently here
    h1, h2, h3, h4, h5, h6 = 75, 362, 0, 313, 50, 30
    x = 128422 - 76800.0
    x = (30000 - (h4 * 64.0 + h5 / 16384.0 * x)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * x * (1.0 + h3 / 67108864.0 * x))
    )
    x = x * (1.0 - h1 * x / 524288.0)
    assert rh == pytest.approx(x, abs=0.02)
    # physical values through the chip model's raw codes, in the data sheet's resolutions
    t, rh, p = out["world"]
    assert t == pytest.approx(-12.5, abs=0.01) and rh == pytest.approx(87.0, abs=0.01)
    assert p == pytest.approx(95000, abs=0.5)
    # ctrl_hum x1, status idle, ctrl_meas: T x1, P x1, normal mode; config: 1000 ms standby
    assert out["ctrl"] == "010027a0"


def test_ds18b20_datasheet_values_resolution_crc_and_power_on(vboard):
    # DS18B20 data sheet, Table 1 (temperature/data relationship); each value held for 2 s while
    # the driver reads once a second (its result is the conversion it started one read earlier).
    temps = [25.0625, 10.125, 0.5, 0.0, -0.5, -10.125, -25.0625, -55.0, 125.0, 84.0, 85.0]
    sched = []
    for i, t in enumerate(temps):
        sched += [[i * 2000, t], [i * 2000 + 1999, t]]
    n = len(temps) * 2
    end = n * 1000
    out = run_driver(
        vboard,
        f"""
        import time
        from gt.drivers.ds18b20 import DS18B20
        ow = hw.onewire()
        a = DS18B20(ow, bytes.fromhex('28ff641e8216c3a1'), 12)
        b = DS18B20(ow, bytes.fromhex('28aa000000000042'), 9)
        t0 = time.ticks_ms()
        def at(ms):
            time.sleep_ms(max(0, ms - time.ticks_diff(time.ticks_ms(), t0)))
        vals = []
        for i in range({n}):
            at(i * 1000 + 100)
            vals.append(a.read()[0])
        show('vals', vals)
        show('b9', b.read()[0])
        show('rom', [bytes(r).hex() for r in ow.scan()])
        at({end} + 100); a.read()                           # still the last table value
        at({end} + 1100); show('before', a.read()[0])      # conversion started, then a power glitch
        at({end} + 2100); attempt('glitch', a.read)        # the scratchpad holds +85 from power-on
        at({end} + 3100); show('again', a.read()[0])
        at({end} + 4100); attempt('crc', a.read)           # noise on the wire
        at({end} + 5100); show('clean', a.read()[0])
        # unplugged: the other sensor still answers resets
        at({end} + 6100); attempt("gone", a.read)
    """,
        {
            "onewire": [
                {
                    "pin": 4,
                    "model": "ds18b20",
                    "rom": "28ff641e8216c3a1",
                    "temp_c": sched + [[end, 21.5]],
                    "unplugged": [[end + 1400, end + 1500], [end + 6000, end + 7000]],
                    "noisy": [[end + 4000, end + 5000]],
                },
                {"pin": 4, "model": "ds18b20", "rom": "28aa000000000042", "temp_c": 10.125},
            ]
        },
    )
    distinct = [v for i, v in enumerate(out["vals"]) if i == 0 or v != out["vals"][i - 1]]
    assert distinct == temps  # every table value, 84 then 85 degC accepted as real
    assert out["b9"] == 10.0  # 9 bits: 0.5 degC steps, undefined low bits masked
    assert out["rom"] == ["28aa000000000042", "28ff641e8216c3a1"]
    assert out["before"] == 21.5
    assert out["glitch"] == "ValueError: 85 degC power-on value: the sensor restarted"
    assert out["again"] == 21.5
    assert out["crc"] == "ValueError: CRC error on the 1-Wire bus"
    assert out["clean"] == 21.5
    assert out["gone"] == "OSError: [Errno 19] ENODEV"


def test_ads1115_codes_full_scale_and_calibration(vboard):
    # ADS1115 data sheet, output codes: FS / 32768 per LSB; beyond +-FS the code clips to 0x7FFF
    # / 0x8000. A pyranometer (0.2 mV per W/m2) on AIN2 at +-0.256 V: 0.16 V -> 800 W/m2.
    out = run_driver(
        vboard,
        """
        from gt.drivers.ads1115 import ADS1115
        i2c = hw.i2c(0)
        def spec(**kw):
            d = {'input': '0', 'fsr': 2.048, 'cal': [0, 0, 1, 1], 'unit': 'V',
                 'lo': -1e9, 'hi': 1e9}
            d.update(kw)
            return d
        show('ain0', ADS1115(i2c, 0x48, spec()).read())
        show('code', i2c.readfrom_mem(0x48, 0, 2).hex())
        show('diff', ADS1115(i2c, 0x48, spec(input='0-1')).read())
        pyr = spec(input='2', fsr=0.256, cal=[0, 0, 0.0002, 1], unit='W/m2')
        show('pyr', ADS1115(i2c, 0x48, pyr).read())
        attempt('over', ADS1115(i2c, 0x48, spec(input='3')).read)
        show('code3', i2c.readfrom_mem(0x48, 0, 2).hex())
    """,
        {
            "i2c": [
                {
                    "model": "ads1115",
                    "addr": 0x48,
                    "ain0": 1.0,
                    "ain1": 1.25,
                    "ain2": 0.16,
                    "ain3": 2.5,
                }
            ]
        },
    )
    assert out["ain0"] == (1.0,) and out["code"] == "3e80"  # 16000 x 62.5 uV
    assert out["diff"] == (-0.25,)  # AIN0 - AIN1, two's complement
    assert out["pyr"][0] == pytest.approx(800.0, abs=1e-6)
    assert out["over"].startswith("ValueError: input beyond") and out["code3"] == "7fff"


def test_adc_channel_linear_calibration(vboard):
    # A 4-20 mA pressure transducer (0..10 bar) across 150 ohm: 0.6 V -> 0 bar, 3.0 V -> 10 bar.
    out = run_driver(
        vboard,
        """
        import time
        from gt.drivers.adc import ADC
        a = ADC(34, {'cal': [0.6, 0, 3.0, 10], 'unit': 'bar', 'lo': -0.25, 'hi': 10.5,
                     'samples': 4})
        show('metrics', a.METRICS)
        show('r', [a.read()[0] for _ in range(1)])
        time.sleep_ms(5000)
        show('r2', a.read()[0])
    """,
        {"adc": {"34": [[0, 1.8], [4999, 1.8], [5000, 0.0]]}},
    )
    assert out["metrics"] == (("", "bar", -0.25, 10.5),)
    assert out["r"][0] == pytest.approx(5.0, abs=1e-6)  # 12 mA
    assert out["r2"] == pytest.approx(
        -2.5
    )  # a broken loop (0 mA): below lo, so the node marks it bad

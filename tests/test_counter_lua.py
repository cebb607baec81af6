"""counters/lua.py: the Redis scripts are loaded with the shared prelude in front, and Redis accepts them."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

import pytest
import redis

from ultra_signals.counters import redis_backend, threshold_redis
from ultra_signals.counters.lua import PRELUDE, load_script

PRELUDE_FUNCTIONS = ("fail", "expect_type", "num", "fmt")


@pytest.mark.parametrize("name", ["budget.lua", "reserve.lua"])
def test_each_script_is_the_prelude_then_its_own_text_and_defines_no_helper_again(name: str) -> None:
    here = files("ultra_signals.counters")
    prelude = here.joinpath(PRELUDE).read_text(encoding="utf-8")
    own = here.joinpath(name).read_text(encoding="utf-8")
    assert load_script(name) == prelude + own
    for fn in PRELUDE_FUNCTIONS:
        assert re.search(rf"^local function {fn}\(", prelude, re.M), fn
        assert not re.search(rf"^local function {fn}\(", own, re.M), f"{name} defines {fn} again"


@pytest.mark.parametrize("script", [redis_backend.SCRIPT, threshold_redis.SCRIPT])
def test_redis_compiles_the_loaded_script_under_the_sha_the_backends_send(redis_url: str, script: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.script_load(script) == hashlib.sha1(script.encode("utf-8")).hexdigest()
    finally:
        client.close()
    assert {redis_backend.SCRIPT_SHA, threshold_redis.SCRIPT_SHA} >= {hashlib.sha1(script.encode()).hexdigest()}

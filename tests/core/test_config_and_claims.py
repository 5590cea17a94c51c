import pytest

from learnlab.core.claims import Claim, at_least, at_most, is_true, within
from learnlab.core.config import apply_overrides, config_hash, parse_overrides
from learnlab.core.errors import UserError
from tests.core.toy_study import Config


def test_overrides_convert_to_annotated_types():
    config = apply_overrides(Config(), parse_overrides(["steps=7", "scale=0.5", "diverge=yes", "mode=slow", "sizes=3,4,5"]))
    assert (config.steps, config.scale, config.diverge, config.mode, config.sizes) == (7, 0.5, True, "slow", (3, 4, 5))


@pytest.mark.parametrize(
    "pair, fragment",
    [
        ("nope=1", "unknown config key 'nope'; valid keys: steps, scale"),
        ("steps=abc", "expected an integer"),
        ("scale=big", "expected a number"),
        ("diverge=maybe", "expected true or false"),
        ("mode=medium", "not one of fast, slow"),
        ("steps=0", "steps must be >= 1"),
        ("novalue", "expects key=value"),
    ],
)
def test_bad_overrides_are_user_errors(pair, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        apply_overrides(Config(), parse_overrides([pair]))


def test_config_hash_depends_on_values_only():
    assert config_hash(Config()) == config_hash(Config())
    assert config_hash(Config()) != config_hash(Config(steps=21))
    assert config_hash(Config(), {"device": "cpu"}) != config_hash(Config(), {"device": "cuda"})


def test_claim_verdicts():
    claim = Claim("C", "s", "Table 1", "0.2", (within("loss", 0.2, 0.02), at_most("ratio", 1.03), is_true("ok")))
    assert claim.evaluate({"loss": 0.203, "ratio": 1.0, "ok": True})["verdict"] == "pass"
    assert claim.evaluate({"loss": 0.21, "ratio": 1.0, "ok": True})["verdict"] == "fail"
    assert claim.evaluate({"loss": 0.2, "ratio": float("nan"), "ok": True})["verdict"] == "fail"
    assert claim.evaluate({"loss": 0.2, "ok": True})["verdict"] == "not-run"
    record = Claim("D", "s", "src", "1", (at_least("x", 2.0),)).evaluate({"x": 1.5})
    assert record["verdict"] == "fail" and record["measured"] == {"x": 1.5} and record["criterion"] == "x >= 2"

"""The base of every method's knobs. It lives in the config layer (:mod:`resweep.config_methods`,
torch-free, so that configs validate without importing a method); this name stays for the
methods' files."""

from resweep.config_methods import LossPrecision, MethodConfig, PretrainKnobs

__all__ = ["LossPrecision", "MethodConfig", "PretrainKnobs"]

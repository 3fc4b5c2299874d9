"""One name, one meaning: ``ntkdsl.train`` is the function, ``ntkdsl.training`` its module."""

from __future__ import annotations

import importlib
import inspect


def test_train_is_the_function_and_training_the_module():
    import ntkdsl

    assert inspect.isfunction(ntkdsl.train)
    training = importlib.import_module("ntkdsl.training")
    assert training.train is ntkdsl.train
    assert inspect.isfunction(training.init_ensemble)
    from ntkdsl.training import train

    assert train is ntkdsl.train
    assert inspect.isfunction(ntkdsl.train)  # importing the module does not shadow it

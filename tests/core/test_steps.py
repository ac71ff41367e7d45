"""core/steps.py without a Recorder (the import-wandb command reuses it this way).

wandb's own behaviour at these rules is checked against its ``.wandb`` record in
test_wandb_history_oracle.py; here: what has no W&B counterpart to compare with.
"""

from primus_lens_wandb_exporter.core.steps import StepRules, record_row


def test_peek_shows_the_open_row_as_close_would_and_changes_nothing():
    rules = StepRules()
    rules.define("val/*", "epoch")
    rules.log([("epoch", 1.5)])                                  # row 0
    rules.log([("val/a", 1.0), ("x", 2.0)], commit=False, ts=5.0)  # row 1, open
    peeked = rules.peek()
    assert peeked == [(1, [("val/a", 1.0, 1.5, 1, 5.0), ("x", 2.0, 1, 1, 5.0), ("epoch", 1.5, 1, 1, 5.0)])]
    # Nothing was bound, filled or advanced: the open row still takes later values.
    assert "val/a" not in rules.defined and rules.row == 1 and rules.last_row == 0
    closed = rules.log([("epoch", 2.5)], ts=6.0)
    assert closed == [(1, [("val/a", 1.0, 2.5, 1, 5.0), ("x", 2.0, 1, 1, 5.0), ("epoch", 2.5, 1, 1, 6.0)])]
    assert rules.peek() == []


def test_a_value_logged_twice_in_one_row_keeps_the_last_and_its_time():
    rules = StepRules()
    rules.log([("a", 1.0), ("b", 1.0)], commit=False, ts=1.0)
    rules.log([("a", 2.0)], commit=False, ts=2.0)
    assert rules.log([("c", 3.0)], ts=3.0) == [(0, [("a", 2.0, 0, 0, 2.0), ("b", 1.0, 0, 0, 1.0),
                                                    ("c", 3.0, 0, 0, 3.0)])]


def test_a_key_that_is_not_a_point_still_gives_the_step():
    # "step" is a name Lens reserves (not a point) but the user's define_metric uses it.
    rules = StepRules(emittable=lambda name: name != "step")
    rules.define("loss", "step")
    assert rules.log([("loss", 1.0)], {"step": 100.0}) == [(0, [("loss", 1.0, 100.0, 0, 0.0)])]
    # Filled by step_sync: still not a point.
    assert rules.log([("loss", 0.5)]) == [(1, [("loss", 0.5, 100.0, 1, 0.0)])]


def test_records_without_a_wandb_row_use_the_step_as_row():
    assert record_row(7, None) == 7
    assert record_row(7.0, 3) == 7
    # A fractional or negative step has no row of its own: the next one after the last.
    assert record_row(2.5, 7) == 8
    assert record_row(-1, None) == 0

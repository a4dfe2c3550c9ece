"""A form built from declared options (:class:`~napari_microsynth.core.options.Option`).

One control per option: a combo box for choices, a spin box bounded by the option's limits for a number,
a check box for a flag, a text field otherwise. An optional option (``None`` allowed: the family picks the
value itself) shows "auto". Tooltips are the option's :meth:`~Option.describe`; advanced options sit in a
collapsed "Advanced" section.

>>> form = OptionsForm(generator.sampling_options())       # doctest: +SKIP
>>> form.set_value("steps", 10)                           # doctest: +SKIP
>>> form.changes()                                        # doctest: +SKIP
{'steps': 10}
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.options import Option

AUTO = "auto"
_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e9


def option_control(option: Option) -> QWidget:
    """The Qt control for one option, set to its default, with its description as tooltip."""
    if option.choices:
        control = QComboBox()
        if option.optional:
            control.addItem(AUTO, None)
        for choice in option.choices:
            control.addItem(str(choice), choice)
    elif option.kind is bool:
        control = QCheckBox()
    elif option.kind is int:
        control = QSpinBox()
        low = -_INT_LIMIT if option.low is None else math.ceil(option.low)
        high = _INT_LIMIT if option.high is None else math.floor(option.high)
        control.setRange(low - 1 if option.optional else low, high)
    elif option.kind is float:
        control = _float_box(option)
    else:
        control = QLineEdit()
        if option.optional:
            control.setPlaceholderText(AUTO)
    if option.optional and isinstance(control, (QSpinBox, QDoubleSpinBox)):
        control.setSpecialValueText(AUTO)  # shown at the minimum, one step below the lowest allowed value
    control.setToolTip(option.describe())
    set_control_value(control, option.default)
    return control


def _float_box(option: Option) -> QDoubleSpinBox:
    """A spin box over ``[low, high]`` with a step of about a twentieth of the range (or of the default)."""
    control = QDoubleSpinBox()
    low = -_FLOAT_LIMIT if option.low is None else float(option.low)
    high = _FLOAT_LIMIT if option.high is None else float(option.high)
    span = high - low if option.low is not None and option.high is not None else abs(option.default or 0.0)
    step = 10.0 ** math.floor(math.log10(span / 20)) if span > 0 else 0.1
    control.setDecimals(max(2, 1 - math.floor(math.log10(step))))
    control.setSingleStep(step)
    control.setRange(low - step if option.optional else low, high)
    return control


def control_value(control: QWidget) -> Any:
    """The value a control holds (None where it shows "auto")."""
    if isinstance(control, QComboBox):
        return control.currentData()
    if isinstance(control, QCheckBox):
        return control.isChecked()
    if isinstance(control, QLineEdit):
        return control.text() or (None if control.placeholderText() == AUTO else "")
    if control.specialValueText() and control.value() == control.minimum():
        return None
    return control.value()


def set_control_value(control: QWidget, value: Any) -> None:
    """Show ``value`` (None = "auto") in a control made by :func:`option_control`."""
    if isinstance(control, QComboBox):
        control.setCurrentIndex(max(0, control.findData(value)))
    elif isinstance(control, QCheckBox):
        control.setChecked(bool(value))
    elif isinstance(control, QLineEdit):
        control.setText("" if value is None else str(value))
    else:
        control.setValue(control.minimum() if value is None else value)


class OptionsForm(QWidget):
    """Controls for a sequence of declared options: the basic ones in a grid, the advanced ones folded away."""

    def __init__(self, options: Sequence[Option], columns: int = 2, parent: QWidget | None = None) -> None:
        from superqt import QCollapsible

        super().__init__(parent)
        self.options = {option.name: option for option in options}
        self.controls = {name: option_control(option) for name, option in self.options.items()}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        basic = [name for name, option in self.options.items() if not option.advanced]
        advanced = [name for name, option in self.options.items() if option.advanced]
        layout.addLayout(self._grid(basic, columns))
        self.advanced: QCollapsible | None = None
        if advanced:
            self.advanced = QCollapsible("Advanced", collapsedIcon="▶")
            inner = QWidget()
            inner.setLayout(self._grid(advanced, columns))
            self.advanced.addWidget(inner)
            layout.addWidget(self.advanced)

    def _grid(self, names: Sequence[str], columns: int) -> QGridLayout:
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        for k, name in enumerate(names):
            row, col = divmod(k, columns)
            label = QLabel(name.replace("_", " "))
            label.setToolTip(self.options[name].describe())
            grid.addWidget(label, row, 2 * col)
            grid.addWidget(self.controls[name], row, 2 * col + 1)
        for col in range(columns):
            grid.setColumnStretch(2 * col + 1, 1)
        return grid

    def values(self) -> dict[str, Any]:
        """Every option's current value, checked against its declaration."""
        return {name: self.options[name].check(control_value(c)) for name, c in self.controls.items()}

    def changes(self) -> dict[str, Any]:
        """The options whose value differs from their declared default (what to pass as keywords)."""
        return {name: value for name, value in self.values().items() if value != self.options[name].default}

    def set_value(self, name: str, value: Any) -> None:
        """Set option ``name`` in the form (None = "auto")."""
        set_control_value(self.controls[name], self.options[name].check(value))

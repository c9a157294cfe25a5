"""The usage window: the last 15 s of an instance's usage samples and whether usage is falling.

The released code (``reference/llumnix_kunserve.md`` B.2) samples usage every 0.5 s into a
sliding window of 30 samples (15 s), computes ``rate = (usage − window[0]) / 30`` after each
push (``window[0]`` the oldest sample kept), keeps the last 30 rates, and calls usage falling
when their sum is negative; the restore rule needs it falling. This class does exactly that
with O(1) work per sample. Usages are kept as integers in parts per million so that the
running sum of rates is exact (a float running sum drifts, and the test is a sign test near
zero); the common ÷ 30 does not change the sign and is left out.
"""

from __future__ import annotations

from collections import deque

_PPM = 1_000_000


class UsageWindow:
    """The last ``samples`` usages and rates of one instance (or fused group)."""

    __slots__ = ("_usages", "_rates", "_rate_sum")

    def __init__(self, samples: int) -> None:
        if samples < 1:
            raise ValueError(f"a usage window holds at least one sample, got {samples}")
        self._usages: deque[int] = deque(maxlen=samples)
        self._rates: deque[int] = deque(maxlen=samples)
        self._rate_sum = 0

    def push(self, usage: float) -> None:
        """Add one sample (demanded ÷ capacity) and its rate against the oldest kept sample."""
        value = round(usage * _PPM)
        self._usages.append(value)
        rate = value - self._usages[0]
        if len(self._rates) == self._rates.maxlen:
            self._rate_sum -= self._rates[0]
        self._rates.append(rate)
        self._rate_sum += rate

    def clear(self) -> None:
        """Forget everything (a group that changes shape starts a new window)."""
        self._usages.clear()
        self._rates.clear()
        self._rate_sum = 0

    @property
    def falling(self) -> bool:
        """Σ of the kept rates < 0 (the code's ``sum(rate_window) < 0``); false when empty."""
        return self._rate_sum < 0

    @property
    def rate_sum(self) -> float:
        """Σ of the kept rates, in usage per sample (the code's sum, including its ÷ 30)."""
        return self._rate_sum / _PPM / self._usages.maxlen

    def __len__(self) -> int:
        return len(self._usages)

"""The seeds a user has looked at, with back and forward like a browser's history."""

from __future__ import annotations

from typing import List, Optional


class SeedHistory:
    """Visiting a seed after going back drops the seeds ahead of it; visiting the current seed again adds nothing."""

    def __init__(self) -> None:
        self._seeds: List[int] = []
        self._position = -1

    @property
    def seeds(self) -> List[int]:
        return list(self._seeds)

    @property
    def can_go_back(self) -> bool:
        return self._position > 0

    @property
    def can_go_forward(self) -> bool:
        return self._position < len(self._seeds) - 1

    def visit(self, seed: int) -> None:
        """Record `seed` as the one shown now."""
        if self._seeds and self._seeds[self._position] == seed:
            return
        del self._seeds[self._position + 1:]
        self._seeds.append(int(seed))
        self._position = len(self._seeds) - 1

    def back(self) -> Optional[int]:
        """The seed shown before the current one, or None at the start."""
        if not self.can_go_back:
            return None
        self._position -= 1
        return self._seeds[self._position]

    def forward(self) -> Optional[int]:
        """The seed shown after the current one (after going back), or None at the end."""
        if not self.can_go_forward:
            return None
        self._position += 1
        return self._seeds[self._position]

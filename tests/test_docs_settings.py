"""Every service and trainer setting is documented in docs/service.md."""

from __future__ import annotations

from pathlib import Path

from app.settings import ServiceSettings
from trainer.online import TrainerSettings

DOC = Path(__file__).resolve().parents[1] / "docs" / "service.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [
        f"IALP_{name.upper()}"
        for cls in (ServiceSettings, TrainerSettings)
        for name in cls.model_fields
        if f"`IALP_{name.upper()}`" not in text
    ]
    assert not missing, f"add these to docs/service.md: {missing}"

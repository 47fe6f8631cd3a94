"""Sealing stored CRM credentials with the secret key."""

from __future__ import annotations

import stat
import threading

import pytest

from leads.encryption import SecretBox, SecretKeyError, secret_box
from leads.settings import Settings


def test_a_sealed_document_opens_with_the_same_key_and_hides_its_text():
    box = SecretBox("correct horse battery staple")
    sealed = box.seal({"access_token": "pat-na1-secret"})
    assert "pat-na1-secret" not in sealed
    assert SecretBox("correct horse battery staple").open(sealed) == {
        "access_token": "pat-na1-secret"
    }


def test_another_key_cannot_open_it_and_says_what_to_do():
    sealed = SecretBox("one").seal({"password": "x"})
    with pytest.raises(SecretKeyError, match="configure the CRM again"):
        SecretBox("two").open(sealed)


def test_without_a_configured_key_one_is_generated_once_readable_by_the_owner_only(
    tmp_path,
):
    settings = Settings(data_dir=tmp_path)
    sealed = secret_box(settings).seal({"token": "t"})
    mode = stat.S_IMODE(settings.secret_key_file.stat().st_mode)
    assert mode == 0o600
    assert secret_box(Settings(data_dir=tmp_path)).open(sealed) == {"token": "t"}


def test_processes_starting_together_agree_on_one_generated_key(tmp_path):
    settings = Settings(data_dir=tmp_path)
    boxes: list[SecretBox] = []
    threads = [
        threading.Thread(target=lambda: boxes.append(secret_box(settings)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sealed = boxes[0].seal({"a": 1})
    assert all(box.open(sealed) == {"a": 1} for box in boxes)
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_the_configured_key_wins_over_a_generated_one(tmp_path):
    sealed = secret_box(Settings(data_dir=tmp_path, secret_key="k" * 32)).seal({"a": 1})
    with pytest.raises(SecretKeyError):
        secret_box(Settings(data_dir=tmp_path)).open(sealed)

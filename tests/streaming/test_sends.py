"""How the subscriber cuts its bytes into sends (app/streaming/subscriber.py `sends`)."""

from __future__ import annotations

from app.streaming.subscriber import SEND_BYTES, sends


def test_small_frames_are_joined_into_sends_of_at_most_send_bytes() -> None:
    frames = [bytes([65 + i % 26]) * 1000 for i in range(200)]  # 200 kB in 1 kB frames
    out = list(sends(frames))
    assert b"".join(out) == b"".join(frames)
    assert all(len(chunk) <= SEND_BYTES for chunk in out)
    assert len(out) == -(-200_000 // (SEND_BYTES // 1000 * 1000))  # as few as fit


def test_a_big_frame_is_sliced_and_its_neighbours_keep_their_order() -> None:
    big = b"x" * (3 * SEND_BYTES + 5)
    frames = [b"a" * 10, big, b"b" * 10]
    out = list(sends(frames))
    assert b"".join(out) == b"".join(frames)
    assert all(len(chunk) <= SEND_BYTES for chunk in out)
    assert out[0] == b"a" * 10 and out[-1] == b"b" * 10
    assert len(out) == 6  # a, four slices of the big frame, b


def test_one_small_frame_is_sent_as_it_is() -> None:
    frame = b"id: 1\nevent: token\ndata: {}\n\n"
    (only,) = sends([frame])
    assert only is frame  # no copy on the hot path

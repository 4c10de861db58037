"""Malformed WAVs (issue 18): each one is a one-line ``AudioError`` from ``load_audio`` and a
counted skip with its reason in ``data.extract``: no traceback, and no silent wrong audio."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from conftest import breath_like
from test_audio import _chunk, _riff
from tfbreath import audio, data
from tfbreath.config import DataConfig, PipelineConfig

RATE = 16000
PIPELINE = PipelineConfig(data=DataConfig(batch_size=4))
TONE = (np.sin(np.arange(800) / 5.0) * 12000).astype(np.int16)  # 50 ms, 16-bit
U32_MAX = 0xFFFFFFFF


def _fmt(tag: int = 1, channels: int = 1, rate: int = RATE, bits: int = 16,
         block_align: int | None = None) -> bytes:
    """A plain fmt chunk; ``block_align`` defaults to the consistent ``channels * bits / 8``."""
    block = channels * bits // 8 if block_align is None else block_align
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block & U32_MAX, block, bits))


def _wav(fmt: bytes, payload: bytes = TONE.tobytes()) -> bytes:
    return _riff(fmt, _chunk(b"data", payload))


def _sized(chunk_id: bytes, size: int, body: bytes) -> bytes:
    """A chunk whose header claims ``size`` bytes, whatever follows."""
    return chunk_id + struct.pack("<I", size) + body


MALFORMED = {  # name -> (file bytes, status, words the load_audio message must hold)
    "empty.wav": (b"", audio.EMPTY, "empty file"),
    "riff_only.wav": (b"RIFF", audio.TRUNCATED, "truncated"),
    "header_only.wav": (b"RIFF" + struct.pack("<I", 4) + b"WAVE", audio.TRUNCATED, "fmt/data chunk missing"),
    "fmt_size_huge.wav": (b"RIFF\x00\x00\x00\x00WAVE" + _sized(b"fmt ", 0x7FFFFFFF, _fmt()[8:])
                          + _chunk(b"data", TONE.tobytes()), audio.TRUNCATED, "fmt/data chunk missing"),
    "walk_past_eof.wav": (_riff(_fmt(), _sized(b"LIST", 0xFFFFFFF0, b"INFO"), _chunk(b"data", TONE.tobytes())),
                          audio.TRUNCATED, "fmt/data chunk missing"),
    "rate_0.wav": (_wav(_fmt(rate=0)), audio.BAD_RATE, "got 0 Hz"),
    "rate_1.wav": (_wav(_fmt(rate=1)), audio.BAD_RATE, "got 1 Hz"),
    "rate_3999.wav": (_wav(_fmt(rate=3999)), audio.BAD_RATE, "got 3999 Hz"),
    "rate_48001.wav": (_wav(_fmt(rate=48001)), audio.BAD_RATE, "got 48001 Hz"),
    "channels_0.wav": (_wav(_fmt(channels=0, block_align=2)), audio.BAD_LAYOUT, "got 0 channel(s)"),
    "channels_65535.wav": (_wav(_fmt(channels=65535, block_align=65535)), audio.BAD_LAYOUT,
                           "got 65535 channel(s), 16-bit, block_align 65535"),
    "block_align_4.wav": (_wav(_fmt(block_align=4)), audio.BAD_LAYOUT, "block_align 4"),
    "float_block_align.wav": (_wav(_fmt(tag=3, bits=32, block_align=2)), audio.BAD_LAYOUT, "block_align 2"),
    "alaw.wav": (_wav(_fmt(tag=6, bits=8)), audio.UNSUPPORTED, "format tag 6 (A-law), 8-bit"),
    "mulaw.wav": (_wav(_fmt(tag=7, bits=8)), audio.UNSUPPORTED, "format tag 7 (mu-law), 8-bit"),
    "adpcm.wav": (_wav(_fmt(tag=0x11, bits=4, block_align=256)), audio.UNSUPPORTED,
                  "format tag 17 (IMA ADPCM), 4-bit"),
    "pcm_12bit.wav": (_wav(_fmt(bits=12, block_align=2)), audio.UNSUPPORTED, "format tag 1 (PCM), 12-bit"),
    "float_16bit.wav": (_wav(_fmt(tag=3, bits=16)), audio.UNSUPPORTED, "format tag 3 (IEEE float), 16-bit"),
    "float_nan.wav": (_wav(_fmt(tag=3, bits=32), np.array([0.5, np.nan, -0.5], np.float32).tobytes()),
                      audio.NON_FINITE, "NaN"),
    "double_inf.wav": (_wav(_fmt(tag=3, bits=64), np.array([0.5, -np.inf], np.float64).tobytes()),
                       audio.NON_FINITE, "Inf"),
    "double_overflow.wav": (_wav(_fmt(tag=3, bits=64), np.array([0.5, 1e300], np.float64).tobytes()),
                            audio.NON_FINITE, "Inf"),
    "less_than_a_frame.wav": (_wav(_fmt(channels=2), b"\x01\x02"), audio.NO_SAMPLES, "no samples"),
    "empty_data_chunk_last.wav": (_riff(_fmt(), _chunk(b"LIST", b"INFO"), _chunk(b"data", b"")),  # its 8 bytes
                                  audio.NO_SAMPLES, "no samples"),  # end the file: the chunk walk still finds it
    "mp3.wav": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(400), audio.NOT_WAV, "not a WAV"),
    "ogg.wav": (b"OggS\x00\x02" + bytes(200), audio.NOT_WAV, "not a WAV"),
    "avi.wav": (b"RIFF\x00\x01\x00\x00AVI LIST" + bytes(64), audio.NOT_WAV, "not a WAV"),
    "text.wav": (b"ID,Target\nsteth_1,I\n", audio.NOT_WAV, "not a WAV"),
}

UNUSUAL_BUT_FINE = {  # name -> (file bytes, the mono float32 audio expected)
    "odd_chunk_before_fmt.wav": (_riff(_chunk(b"junk", b"abc"), _fmt(), _chunk(b"data", TONE.tobytes())),
                                 TONE / 2.0**15),
    "u8_65535_channels.wav": (_wav(_fmt(channels=65535, bits=8), bytes([255]) * 65535 + bytes([1]) * 65535),
                              np.array([127 / 128, -127 / 128])),
    "odd_data_size.wav": (_wav(_fmt(), TONE.tobytes() + b"\x7f"), TONE / 2.0**15),  # whole frames only
}


@pytest.mark.parametrize("name", MALFORMED)
def test_decode_wav_gives_the_status_and_zeros(name):
    contents, expected, _ = MALFORMED[name]
    wav, status = audio.decode_wav(contents, RATE, 400)
    assert int(status) == expected, audio.status_message(int(status))
    assert wav.shape == (400,) and not wav.numpy().any()


@pytest.mark.parametrize("name", MALFORMED)
def test_load_audio_raises_one_line_naming_file_and_problem(tmp_path, name):
    contents, expected, words = MALFORMED[name]
    path = tmp_path / name
    path.write_bytes(contents)
    with pytest.raises(audio.AudioError) as info:
        audio.load_audio(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {audio.status_message(expected)}")
    assert words in message and "\n" not in message


@pytest.mark.parametrize("name", UNUSUAL_BUT_FINE)
def test_unusual_but_valid_files_decode_exactly(name):
    contents, expected = UNUSUAL_BUT_FINE[name]
    wav, status = audio.decode_wav(contents, None)
    assert int(status) == audio.OK
    np.testing.assert_allclose(wav.numpy(), expected.astype(np.float32), atol=1e-7)


def test_extract_counts_every_malformed_file_with_its_reason(tmp_path, write_wav):
    good = [write_wav(f"good{i}.wav", breath_like(i)) for i in range(2)]
    bad = []
    for name, (contents, _, _) in MALFORMED.items():
        bad.append(tmp_path / name)
        bad[-1].write_bytes(contents)
    folder = tmp_path / "folder.wav"  # named like a WAV, but a folder
    folder.mkdir()
    feature_set = data.extract([good[0], *bad, folder, good[1]], None, PIPELINE, progress=False)
    report = feature_set.report
    assert report.total == len(MALFORMED) + 3
    reasons = {path.name: reason for path, reason in report.skipped}
    assert reasons == {**{name: audio.status_message(status) for name, (_, status, _) in MALFORMED.items()},
                       "folder.wav": audio.status_message(audio.UNREADABLE)}
    assert [p.name for p in feature_set.kept_examples.files] == ["good0.wav", "good1.wav"]
    assert feature_set.to_numpy()["spectral"].shape[0] == 2
    assert f"skipped {len(MALFORMED) + 1}" in str(report)

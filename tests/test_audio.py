"""Tests of tfbreath.audio: in-graph WAV decoding, resampling alignment, status codes, load_audio."""

from __future__ import annotations

import errno
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import ICBHI_DIR, needs_icbhi, sine
from tfbreath import audio

TARGET = 16000
TOLERANCE = 1e-4  # max abs error against soundfile's float64 reading


def _decode(path, target_rate=None, num_samples=None):
    wav, status = audio.decode_wav(tf.io.read_file(str(path)), target_rate, num_samples)
    return wav.numpy(), int(status)


def _reference(path) -> np.ndarray:
    """soundfile's reading, mixed down to mono by the mean."""
    ref, _ = sf.read(path, dtype="float64", always_2d=True)
    return ref.mean(axis=1)


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return chunk_id + struct.pack("<I", len(body)) + body + pad


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt_pcm16(rate: int = TARGET, channels: int = 1) -> bytes:
    block = 2 * channels
    return _chunk(b"fmt ", struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16))


# ---------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------
@needs_icbhi
@pytest.mark.parametrize("name", sorted(p.name for p in ICBHI_DIR.glob("*.wav")) if ICBHI_DIR.is_dir() else [])
def test_icbhi_matches_soundfile(name):
    path = ICBHI_DIR / name
    wav, status = _decode(path)
    ref = _reference(path)
    assert status == audio.OK
    assert wav.dtype == np.float32
    assert wav.shape == ref.shape
    assert np.max(np.abs(wav - ref)) <= TOLERANCE


@needs_icbhi
def test_icbhi_has_all_ten_files_and_32bit_pcm():
    files = sorted(ICBHI_DIR.glob("*.wav"))
    assert len(files) == 10
    assert {sf.info(p).subtype for p in files} >= {"PCM_16", "PCM_24", "PCM_32"}


# ---------------------------------------------------------------------------------------------
# Synthetic encodings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["WAV", "WAVEX"])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("channels", [1, 2])
def test_encodings_match_soundfile(write_wav, fmt, subtype, channels):
    signal = sine(440.0, seconds=0.25, sample_rate=22050, amplitude=0.6)
    if channels == 2:
        signal = np.stack([signal, -0.5 * sine(97.0, 0.25, 22050, 0.8)], axis=1)
    path = write_wav(f"x_{subtype}_{fmt}_{channels}.wav", signal, 22050, subtype, fmt)
    wav, status = _decode(path)
    ref = _reference(path)
    assert status == audio.OK
    assert wav.shape == ref.shape == (signal.shape[0],)
    assert np.max(np.abs(wav - ref)) <= TOLERANCE
    header = audio.parse_wav_header(tf.io.read_file(str(path)))
    assert int(header.sample_rate) == 22050 and int(header.channels) == channels
    assert int(header.format_tag) == (3 if subtype in ("FLOAT", "DOUBLE") else 1)  # EXTENSIBLE resolved


def test_full_scale_values(write_wav):
    """Extreme codes map to exactly -1 and just below +1 (24- and 32-bit sign handling)."""
    for subtype, step in [("PCM_U8", 2.0**-7), ("PCM_16", 2.0**-15), ("PCM_24", 2.0**-23), ("PCM_32", 2.0**-31)]:
        signal = np.array([-1.0, -0.5, 0.0, 0.5, 1.0 - step, 0.25], np.float64)
        path = write_wav(f"full_{subtype}.wav", signal, TARGET, subtype)
        wav, status = _decode(path)
        assert status == audio.OK
        np.testing.assert_allclose(wav, signal.astype(np.float32), atol=1e-7)


def test_chunks_in_any_order_with_odd_sizes():
    """The usual fmt-then-data layout (the fast path, fmt bodies of 16, 18 and odd 17 bytes) and
    LIST and odd-sized chunks anywhere, data before fmt (the chunk walk): all find both chunks."""
    samples = np.array([1000, -2000, 3000, -32768, 32767], np.int16)
    data = _chunk(b"data", samples.tobytes())
    odd = _chunk(b"junk", b"abc")  # 3 bytes + 1 pad byte
    listing = _chunk(b"LIST", b"INFOISFT\x06\x00\x00\x00tests\x00")
    fmt = _fmt_pcm16()
    fmt18 = _chunk(b"fmt ", fmt[8:] + b"\x00\x00")  # WAVEFORMATEX with cbSize = 0
    fmt17 = _chunk(b"fmt ", fmt[8:] + b"\x00")  # odd size: a pad byte follows
    expected = samples.astype(np.float32) / 2**15
    stereo = _fmt_pcm16(channels=2)  # a second fmt chunk: the first one describes the data
    for contents in (_riff(fmt, data), _riff(fmt18, data), _riff(fmt17, data), _riff(fmt, listing, data),
                     _riff(listing, odd, fmt, data), _riff(data, odd, fmt), _riff(fmt, stereo, data),
                     _riff(data, fmt, stereo)):
        wav, status = audio.decode_wav(contents, None)
        assert int(status) == audio.OK
        np.testing.assert_array_equal(wav.numpy(), expected)


@pytest.mark.parametrize("rate", [4000, 8000, 11025, 22050, 44100, 48000])
def test_resampled_length(write_wav, rate):
    n = int(0.37 * rate) + 1  # not a round number of output samples
    path = write_wav(f"len_{rate}.wav", sine(300.0, n / rate, rate), rate, "FLOAT")
    wav, status = _decode(path, TARGET)
    assert status == audio.OK
    assert wav.shape == (round(n * TARGET / rate),)


@pytest.mark.parametrize("rate, n", [(44100, 16319), (48000, 17762)])  # 5920.73 and 5920.67 output samples
def test_resampled_length_rounds_up_and_keeps_the_last_sample(write_wav, rate, n):
    """A length whose fraction is above one half rounds up (test_resampled_length's all fall below
    it), and that last sample is the clip's, not padding: a level clip ends at its level."""
    level = 0.5
    path = write_wav(f"round_{rate}.wav", np.full(n, level), rate, "FLOAT")
    wav, status = _decode(path, TARGET)
    assert status == audio.OK
    assert wav.shape == (round(n * TARGET / rate),) == (int(n * TARGET / rate) + 1,)
    assert wav[-1] > level / 2  # the filter's edge ringing leaves ~0.45 (measured); padding would leave 0


@pytest.mark.parametrize("rate", [4000, 8000, 11025, 22050, 44100, 48000])
def test_resample_impulse_alignment(write_wav, rate):
    """tfio's 32-sample delay is compensated: an impulse at 0.5 s stays at 0.5 s (±1 sample)."""
    impulse = np.zeros(rate, np.float32)
    impulse[rate // 2] = 0.9
    path = write_wav(f"impulse_{rate}.wav", impulse, rate, "FLOAT")
    wav, status = _decode(path, TARGET)
    assert status == audio.OK
    assert wav.shape == (TARGET,)
    assert abs(int(np.argmax(np.abs(wav))) - TARGET // 2) <= 1


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resample_keeps_sine(write_wav, rate):
    """A 1 kHz sine comes out at 1 kHz, in phase with the sine sampled directly at 16 kHz."""
    freq = 1000.0
    path = write_wav(f"sine_{rate}.wav", sine(freq, 1.0, rate), rate, "FLOAT")
    wav, status = _decode(path, TARGET)
    assert status == audio.OK
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    assert np.fft.rfftfreq(len(wav), 1.0 / TARGET)[np.argmax(spectrum)] == pytest.approx(freq, abs=2.0)
    interior = slice(200, -200)  # away from the filter's edge transients
    assert np.max(np.abs(wav[interior] - sine(freq, 1.0, TARGET)[interior])) < 0.02


def test_same_rate_is_not_resampled(write_wav):
    signal = sine(440.0, 0.2, TARGET)
    path = write_wav("same.wav", signal, TARGET, "FLOAT")
    wav, status = _decode(path, TARGET)
    assert status == audio.OK
    np.testing.assert_array_equal(wav, signal)


# ---------------------------------------------------------------------------------------------
# Fixed length and graph mode
# ---------------------------------------------------------------------------------------------
def test_num_samples_repeats_a_short_file_and_trims_a_long_one(write_wav):
    signal = sine(440.0, 0.5, TARGET)  # 8000 samples
    path = write_wav("half.wav", signal, TARGET, "FLOAT")
    filled, status = _decode(path, TARGET, num_samples=20000)
    assert status == audio.OK and filled.shape == (20000,)
    np.testing.assert_array_equal(filled, np.concatenate([signal, signal, signal[:4000]]))  # 2.5 copies
    trimmed, _ = _decode(path, TARGET, num_samples=3000)
    np.testing.assert_array_equal(trimmed, signal[:3000])
    one_sample, _ = _decode(write_wav("tick.wav", np.full(1, 0.5), TARGET, "FLOAT"), TARGET, num_samples=5)
    np.testing.assert_array_equal(one_sample, np.full(5, 0.5, np.float32))


def test_dataset_map_matches_direct_call(write_wav, tmp_path):
    paths = [
        write_wav("a.wav", sine(300.0, 0.7, 44100), 44100, "PCM_24"),
        write_wav("b.wav", np.stack([sine(500.0, 1.3, 8000)] * 2, axis=1), 8000, "PCM_16", "WAVEX"),
        write_wav("c.wav", np.zeros(800, np.float32), 8000, "PCM_16"),  # silent
    ]
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n")
    paths.append(text)
    length = TARGET
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    ds = ds.map(lambda p: audio.read_wav(p, TARGET, length)).batch(len(paths))
    batch_audio, batch_status = next(iter(ds))
    assert batch_audio.shape == (len(paths), length)
    for i, path in enumerate(paths):
        wav, status = _decode(path, TARGET, length)
        assert int(batch_status[i]) == status
        np.testing.assert_allclose(batch_audio[i].numpy(), wav, atol=1e-6)
    assert [int(s) for s in batch_status] == [audio.OK, audio.OK, audio.SILENT, audio.NOT_WAV]
    assert np.abs(batch_audio[0].numpy()).max() > 0.4
    assert not batch_audio[2:].numpy().any()


def test_works_inside_tf_function(write_wav):
    path = write_wav("fn.wav", sine(440.0, 0.25, 22050), 22050, "PCM_16")

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(contents):
        return audio.decode_wav(contents, TARGET, 4000)

    wav, status = decode(tf.io.read_file(str(path)))
    direct, direct_status = _decode(path, TARGET, 4000)
    assert int(status) == direct_status == audio.OK
    np.testing.assert_allclose(wav.numpy(), direct, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------
def _valid_bytes(tmp_path) -> bytes:
    path = tmp_path / "valid.wav"
    sf.write(path, sine(440.0, 0.1, TARGET), TARGET, subtype="PCM_16")
    return path.read_bytes()


def _bad_files(tmp_path, write_wav) -> dict[str, tuple[bytes, int, str]]:
    """name -> (contents, expected status, word expected in the load_audio message)."""
    valid = _valid_bytes(tmp_path)
    noisy = sine(440.0, 0.1, TARGET)
    nan, inf = noisy.copy(), noisy.copy()
    nan[100] = np.nan
    inf[200] = -np.inf
    return {
        "truncated_data.wav": (valid[:-100], audio.TRUNCATED, "truncated"),
        "truncated_fmt.wav": (valid[:30], audio.TRUNCATED, "truncated"),
        "truncated_riff.wav": (valid[:6], audio.TRUNCATED, "truncated"),
        "corrupt_wave_id.wav": (valid[:8] + b"WAVX" + valid[12:], audio.NOT_WAV, "not a WAV"),
        "corrupt_fmt_id.wav": (valid[:12] + b"fmx " + valid[16:], audio.TRUNCATED, "truncated"),
        "text.wav": (b"this is a text file, not audio\n" * 4, audio.NOT_WAV, "not a WAV"),
        "empty.wav": (b"", audio.EMPTY, "empty"),
        "silence.wav": (write_wav("s.wav", np.zeros(1600), TARGET).read_bytes(), audio.SILENT, "silent"),
        "nan.wav": (write_wav("n.wav", nan, TARGET, "FLOAT").read_bytes(), audio.NON_FINITE, "NaN"),
        "inf.wav": (write_wav("i.wav", inf, TARGET, "FLOAT").read_bytes(), audio.NON_FINITE, "Inf"),
        "alaw.wav": (write_wav("a.wav", noisy, TARGET, "ALAW").read_bytes(), audio.UNSUPPORTED,
                     "format tag 6 (A-law), 8-bit"),
        "double_nan.wav": (write_wav("dn.wav", nan, TARGET, "DOUBLE").read_bytes(), audio.NON_FINITE, "NaN"),
        "rate96k.wav": (write_wav("r.wav", sine(440.0, 0.1, 96000), 96000).read_bytes(), audio.BAD_RATE,
                        "96000 Hz"),
        "rate2k.wav": (write_wav("r2.wav", sine(440.0, 0.1, 2000), 2000).read_bytes(), audio.BAD_RATE,
                       "sample rate"),
        "no_samples.wav": (_riff(_fmt_pcm16(), _chunk(b"data", b"")), audio.NO_SAMPLES, "no samples"),
        "no_data.wav": (_riff(_fmt_pcm16()), audio.TRUNCATED, "truncated"),
    }


def test_bad_inputs_status_and_zero_audio(tmp_path, write_wav):
    for name, (contents, expected, _) in _bad_files(tmp_path, write_wav).items():
        wav, status = audio.decode_wav(contents, TARGET, 500)
        assert int(status) == expected, (name, audio.status_message(int(status)))
        assert wav.shape == (500,) and not wav.numpy().any(), name
        wav, _ = audio.decode_wav(contents, None)
        assert wav.shape == (0,), name


@pytest.mark.parametrize("peak_dbfs, subtype, expected", [
    (-89.5, "FLOAT", audio.OK),
    (audio.SILENCE_DBFS, "FLOAT", audio.OK),  # a peak at the level itself is not below it
    (-90.5, "FLOAT", audio.SILENT),
    (20 * np.log10(1 / 32768), "PCM_16", audio.SILENT),  # +-1 LSB of 16 bits: -90.3 dBFS, dither alone
    (20 * np.log10(2 / 32768), "PCM_16", audio.OK),  # +-2 LSB: -84.3 dBFS, a faint recording
])
def test_silence_is_a_peak_below_minus_90_dbfs(write_wav, peak_dbfs, subtype, expected):
    """The SILENT boundary (``audio.SILENCE_DBFS``) within half a dB, and where 16-bit files fall."""
    signs = np.where(np.arange(1600) % 2 == 0, 1.0, -1.0)
    path = write_wav("quiet.wav", 10.0 ** (peak_dbfs / 20.0) * signs, TARGET, subtype)
    assert _decode(path)[1] == expected


def test_a_file_with_no_sample_left_after_resampling_is_too_short(tmp_path, write_wav):
    """One frame at 48 kHz is round(1 / 3) = 0 samples at 16 kHz: not an empty clip that counts as OK."""
    path = write_wav("tick.wav", np.full(1, 0.5), 48000)
    wav, status = audio.decode_wav(path.read_bytes(), TARGET, 500)
    assert int(status) == audio.TOO_SHORT and wav.shape == (500,) and not wav.numpy().any()
    assert int(audio.decode_wav(path.read_bytes(), None)[1]) == audio.OK  # at its own rate it has its sample
    with pytest.raises(audio.AudioError, match=f"^{re.escape(str(path))}: too short for the target rate"):
        audio.load_audio(path, TARGET, None)


def test_load_audio_raises_one_line_naming_file(tmp_path, write_wav):
    for name, (contents, _, word) in _bad_files(tmp_path, write_wav).items():
        path = tmp_path / name
        path.write_bytes(contents)
        with pytest.raises(audio.AudioError) as info:
            audio.load_audio(path)
        message = str(info.value)
        assert name in message and word in message, message
        assert "\n" not in message
    with pytest.raises(audio.AudioError, match="missing.wav: file not found"):
        audio.load_audio(tmp_path / "missing.wav")


def lock(path: Path, monkeypatch) -> None:
    """Take away read permission from ``path``: chmod 000 where it bites, and ``Path.open``
    refused by hand too, since root (which the tests may run as) reads anything."""
    path.chmod(0)
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)


def test_load_audio_names_a_folder_or_an_unreadable_file(tmp_path, write_wav, monkeypatch):
    """Not "file not found" for a path that exists: a folder, or a file this process may not read."""
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    with pytest.raises(audio.AudioError, match=r"folder\.wav: is a folder, not a WAV file$"):
        audio.load_audio(folder)
    locked, fine = (write_wav(name, sine(440.0, 0.1, TARGET)) for name in ("locked.wav", "fine.wav"))
    lock(locked, monkeypatch)
    assert not audio.is_readable(locked) and audio.is_readable(fine) and not audio.is_readable(folder)
    with pytest.raises(audio.AudioError, match=r"locked\.wav: cannot be read \(permission denied\)$"):
        audio.load_audio(locked)


STREAMED = 0xFFFFFFFF  # the size a streaming writer (sox, ffmpeg to a pipe) leaves in the header


def _streamed(samples: np.ndarray, riff_size: int = STREAMED, before_data: bytes = b"",
              tail: bytes = b"") -> bytes:
    """A 16-bit mono WAV whose data chunk size is the streaming sentinel (and its RIFF size, by default)."""
    data = b"data" + struct.pack("<I", STREAMED) + samples.tobytes() + tail
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + _fmt_pcm16() + before_data + data


def test_streamed_sizes_read_the_data_to_the_end_of_the_file():
    """0xFFFFFFFF in the data (and RIFF) size means "to the end of the file", as other decoders read
    it; a stray last byte is not a whole frame and is dropped."""
    samples = (np.sin(np.arange(1600) / 7.0) * 20000).astype(np.int16)
    expected = samples.astype(np.float32) / 2**15
    listing = _chunk(b"LIST", b"INFOISFT\x04\x00\x00\x00sox\x00")
    for contents in (_streamed(samples), _streamed(samples, riff_size=36 + samples.nbytes),
                     _streamed(samples, before_data=listing), _streamed(samples, tail=b"\x01")):
        header = audio.parse_wav_header(contents)
        assert int(header.status) == audio.OK
        assert int(header.data_size) == len(contents) - int(header.data_offset)  # to the end of the file
        wav, status = audio.decode_wav(contents, None)
        assert int(status) == audio.OK
        np.testing.assert_array_equal(wav.numpy(), expected)


def test_a_data_size_past_the_end_of_file_is_still_truncated():
    samples = np.full(100, 1000, np.int16)
    for size in (samples.nbytes + 2, STREAMED - 1):
        contents = _riff(_fmt_pcm16()) + b"data" + struct.pack("<I", size) + samples.tobytes()
        assert int(audio.parse_wav_header(contents).status) == audio.TRUNCATED, size


def test_load_audio_ok(write_wav):
    path = write_wav("ok.wav", sine(440.0, 0.5, 44100), 44100, "PCM_24")
    native = audio.load_audio(path, sample_rate=None)
    assert native.dtype == np.float32 and native.shape == (22050,)
    assert np.max(np.abs(native - _reference(path))) <= TOLERANCE
    assert audio.load_audio(path).shape == (8000,)
    assert audio.load_audio(path, 16000, duration_s=1.0).shape == (16000,)
    assert audio.load_audio(path, None, duration_s=0.25).shape == (11025,)
    assert audio.load_audio(path, None, duration_s=0.35).shape == (15435,)  # 44100 x 0.35 = 15434.999...: rounded


def test_status_messages_cover_every_code():
    codes = [audio.OK, audio.EMPTY, audio.NOT_WAV, audio.TRUNCATED, audio.UNSUPPORTED, audio.BAD_RATE,
             audio.NO_SAMPLES, audio.NON_FINITE, audio.SILENT, audio.BAD_LAYOUT, audio.UNREADABLE, audio.TOO_SHORT]
    assert len(set(codes)) == len(codes)
    messages = [audio.status_message(c) for c in codes]
    assert len(set(messages)) == len(messages)
    assert "supported" in audio.status_message(audio.UNSUPPORTED)
    assert audio.status_message(99).startswith("unknown")


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_rate"):
        audio.decode_wav(b"", 96000)
    with pytest.raises(ValueError, match="num_samples"):
        audio.decode_wav(b"", TARGET, 0)

"""In-graph WAV decoding for ``tf.data``: RIFF parsing, PCM/float decoding, mix-down, resampling.

Everything in the graph functions is plain TensorFlow (plus ``tfio.audio.resample``), so they run
inside ``Dataset.map`` and ``tf.function`` without ``tf.py_function``:

    ds = tf.data.Dataset.list_files("clips/*.wav")
    ds = ds.map(lambda p: read_wav(p, target_rate=16000, num_samples=16000))
    ds = ds.filter(lambda audio, status: status == OK)

Supported encodings: 8-bit unsigned and 16-, 24- and 32-bit signed integer PCM, and 32- and
64-bit IEEE float, with a plain (format tag 1 / 3) or WAVE_FORMAT_EXTENSIBLE header, any number
of channels (mixed down to mono by the mean), at any rate in ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``.
Audio is float32 in [-1, 1]. A data chunk whose size is ``0xFFFFFFFF``, what streaming writers
(sox, ffmpeg to a pipe) leave in the header, runs to the end of the file, in whole frames.

The samples are decoded directly from the ``data`` chunk with ``tf.io.decode_raw`` (the chunk
walk already locates it), rather than with ``tfio.audio.decode_wav``: tfio 0.37.1 misreads
32-bit integer PCM and needs the dtype before the header is known.

Every problem is reported as a status code instead of an exception, so a bad file becomes a
zero-filled element that the pipeline can filter out; ``read_wav`` takes whether the file can be
read (``is_readable``, checked in Python) so that a folder or a file without read permission is a
status too (UNREADABLE), not an op error. ``load_audio`` is the Python-side wrapper that raises
``AudioError`` with a one-line ``"<path>: <problem>"`` message.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_io as tfio

from tfbreath.config import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from tfbreath.errors import TfbreathError

# ---------------------------------------------------------------------------------------------
# Status codes
# ---------------------------------------------------------------------------------------------
OK = 0
EMPTY = 1
NOT_WAV = 2
TRUNCATED = 3
UNSUPPORTED = 4
BAD_RATE = 5
NO_SAMPLES = 6
NON_FINITE = 7
SILENT = 8
BAD_LAYOUT = 9
UNREADABLE = 10
TOO_SHORT = 11

SUPPORTED_ENCODINGS = ("8-bit unsigned or 16/24/32-bit integer PCM, or 32/64-bit float "
                       "(format tag 1, 3 or EXTENSIBLE)")

_STATUS_MESSAGES = {
    OK: "ok",
    EMPTY: "empty file (0 bytes)",
    NOT_WAV: "not a WAV file (no RIFF/WAVE header)",
    TRUNCATED: "truncated WAV (header cut short, fmt/data chunk missing or data past end of file)",
    UNSUPPORTED: f"unsupported WAV encoding; supported: {SUPPORTED_ENCODINGS}",
    BAD_RATE: f"sample rate outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz",
    NO_SAMPLES: "no samples (empty data chunk)",
    NON_FINITE: "non-finite samples (NaN or Inf, or beyond float32's range)",
    SILENT: "silent (peak below -90 dBFS)",
    BAD_LAYOUT: "inconsistent fmt chunk (needs >= 1 channel and block_align = channels x bytes per sample)",
    UNREADABLE: "cannot be read (permission denied or not a regular file)",
    TOO_SHORT: "too short for the target rate (no sample left after resampling)",
}


def status_message(code: int) -> str:
    """Human-readable one-line description of a status code."""
    return _STATUS_MESSAGES.get(int(code), f"unknown status {int(code)}")


class AudioError(TfbreathError, ValueError):
    """A file could not be loaded; the message is ``"<path>: <problem>"`` on one line."""


# ---------------------------------------------------------------------------------------------
# Constants of the WAV format and of the decoder
# ---------------------------------------------------------------------------------------------
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

FORMAT_NAMES = {WAVE_FORMAT_PCM: "PCM", 2: "Microsoft ADPCM", WAVE_FORMAT_IEEE_FLOAT: "IEEE float", 6: "A-law",
                7: "mu-law", 0x11: "IMA ADPCM", 0x31: "GSM 6.10", 0x50: "MPEG", 0x55: "MPEG Layer 3"}
"""Names of common format tags, for the message about an unsupported one."""

STREAMED_SIZE = 0xFFFFFFFF
"""A data chunk size meaning "to the end of the file", left by writers that cannot seek back."""

SILENCE_DBFS = -90.0
"""A file whose peak |x| is below this level is reported as SILENT."""
SILENCE_PEAK = 10.0 ** (SILENCE_DBFS / 20.0)  # ≈ 3.16e-5, just above one 16-bit LSB (3.05e-5)

RESAMPLE_DELAY = 32
"""Output delay of ``tfio.audio.resample`` (0.37.1), in samples at the lower of the two rates.

Measured on this machine: an impulse at sample 8000 of a 1 s clip comes out at 8032 for
16k/22.05k/44.1k/48k -> 16k, at 8064 for 8k -> 16k, 8128 for 4k -> 16k, 8046 for 11.025k -> 16k,
so the 16-kHz and 4-kHz targets of the pipelines come out aligned from every rate tried. Some other
pairs are delayed by 33: 16k -> 12k, 48k -> 44.1k and 24k/32k/48k -> 22.05k leave the clip one
sample late (not corrected).
"""

_RIFF_HEADER_BYTES = 12  # "RIFF" <u32 size> "WAVE"
_CHUNK_HEADER_BYTES = 8  # <4-byte id> <u32 size>
_FMT_MIN_BYTES = 16  # plain WAVEFORMAT(EX) without cbSize
_FMT_EXTENSIBLE_BYTES = 40  # WAVEFORMATEXTENSIBLE: 16 + cbSize(2) + 22 extension bytes
_U16 = 2  # byte widths of the little-endian header integers
_U32 = 4
_FMT_READ_BYTES = _FMT_EXTENSIBLE_BYTES  # bytes of the fmt chunk read (zero-padded if shorter)
# The usual layout, RIFF header + fmt chunk + data chunk, is read in one piece this long.
_FIRST_CHUNK = _RIFF_HEADER_BYTES
_FIRST_BODY = _FIRST_CHUNK + _CHUNK_HEADER_BYTES
_HEAD_BYTES = _FIRST_BODY + _FMT_READ_BYTES + _CHUNK_HEADER_BYTES

# Byte offsets inside the fmt chunk body.
_FMT_TAG = 0
_FMT_CHANNELS = 2
_FMT_RATE = 4
_FMT_BLOCK_ALIGN = 12
_FMT_BITS = 14
_FMT_SUBFORMAT = 24  # EXTENSIBLE: the real format tag is the first 2 bytes of the SubFormat GUID

_BITS_PER_BYTE = 8
_INT24_BYTES = 3
_INT24_SIGN = 2**23
_INT24_RANGE = 2**24
_INT24_WEIGHTS = [256**i for i in range(_INT24_BYTES)]  # little-endian byte weights
_UINT8_ZERO = 128  # 8-bit PCM is unsigned: 128 is silence

# Decoder branches for tf.switch_case (index -1 = nothing to decode).
_KIND_NONE = -1
_KIND_UINT8 = 0
_KIND_INT16 = 1
_KIND_INT24 = 2
_KIND_INT32 = 3
_KIND_FLOAT32 = 4
_KIND_FLOAT64 = 5

_PCM_KINDS = {8: _KIND_UINT8, 16: _KIND_INT16, 24: _KIND_INT24, 32: _KIND_INT32}
_FLOAT_KINDS = {32: _KIND_FLOAT32, 64: _KIND_FLOAT64}
PCM_BITS = tuple(_PCM_KINDS)
"""Supported integer PCM bit depths."""
FLOAT_BITS = tuple(_FLOAT_KINDS)
"""Supported IEEE float bit depths."""

# Full-scale of each integer encoding: samples are divided by it to land in [-1, 1).
_FULL_SCALE = {_KIND_UINT8: 2.0**7, _KIND_INT16: 2.0**15, _KIND_INT24: 2.0**23, _KIND_INT32: 2.0**31}


class WavHeader(NamedTuple):
    """What ``parse_wav_header`` found; all fields are scalar int64 tensors except ``status``.

    ``format_tag`` is the effective tag (the SubFormat tag for EXTENSIBLE files). Fields that
    could not be read are -1 (or 0) and ``status`` says why.
    """

    status: tf.Tensor  # int32
    format_tag: tf.Tensor
    channels: tf.Tensor
    sample_rate: tf.Tensor
    bits_per_sample: tf.Tensor
    block_align: tf.Tensor
    data_offset: tf.Tensor
    data_size: tf.Tensor


# ---------------------------------------------------------------------------------------------
# Header parsing
# ---------------------------------------------------------------------------------------------
def _read_bytes(contents: tf.Tensor, pos: tf.Tensor, length: int) -> tf.Tensor:
    """``length`` bytes at ``pos`` as uint8, zero-padded past the end of file. ``[] -> [length]``"""
    with tf.name_scope("read_bytes"):
        size = tf.cast(tf.strings.length(contents), tf.int64)
        start = tf.clip_by_value(tf.cast(pos, tf.int64), 0, size)  # substr fails if pos > size
        piece = tf.strings.substr(contents, start, length)  # [] string, <= length bytes
        raw = tf.io.decode_raw(piece, tf.uint8)  # [<= length]
        raw = tf.pad(raw, [[0, length - tf.shape(raw)[0]]])  # [length]
        return tf.ensure_shape(raw, [length])


def _le_uint(raw: tf.Tensor, offset: int, width: int) -> tf.Tensor:
    """Little-endian unsigned integer of ``width`` bytes at ``offset`` of a uint8 vector. ``-> [] int64``"""
    digits = tf.cast(raw[offset:offset + width], tf.int64)  # [width]
    weights = tf.constant([256**i for i in range(width)], tf.int64)  # [width]
    return tf.reduce_sum(digits * weights)  # []


def _has_id(raw: tf.Tensor, offset: int, four_cc: str) -> tf.Tensor:
    """Whether the 4 bytes at ``offset`` of a uint8 vector spell ``four_cc``. ``-> [] bool``"""
    expected = tf.constant([ord(c) for c in four_cc], tf.uint8)  # [4]
    return tf.reduce_all(tf.equal(raw[offset:offset + 4], expected))


def _encoding_kind(tag: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """The decoder branch of a format tag and bit depth, ``_KIND_NONE`` if unsupported. ``-> [] int32``"""
    kind = tf.constant(_KIND_NONE)
    for format_tag, kinds in ((WAVE_FORMAT_PCM, _PCM_KINDS), (WAVE_FORMAT_IEEE_FLOAT, _FLOAT_KINDS)):
        for depth, depth_kind in kinds.items():
            kind = tf.where(tf.logical_and(tf.equal(tag, format_tag), tf.equal(bits, depth)), depth_kind, kind)
    return kind  # []


def parse_wav_header(contents: tf.Tensor) -> WavHeader:
    """Parse the RIFF/WAVE header of a whole file's bytes, in-graph. ``[] string -> WavHeader``

    Walks the chunk list (any order, unknown chunks skipped, odd sizes padded to even) to find
    ``fmt `` and ``data``; a data size of ``STREAMED_SIZE`` is read as "to the end of the file".
    ``status`` is OK, EMPTY, NOT_WAV, TRUNCATED, UNSUPPORTED, BAD_LAYOUT, BAD_RATE or NO_SAMPLES;
    the sample-level checks (NON_FINITE, SILENT) happen in ``decode_wav``.
    """
    with tf.name_scope("parse_wav_header"):
        contents = tf.convert_to_tensor(contents, tf.string)
        size = tf.cast(tf.strings.length(contents), tf.int64)  # []
        head = _read_bytes(contents, 0, _HEAD_BYTES)  # [68]
        riff = head[:_RIFF_HEADER_BYTES]  # [12]
        is_riff = tf.logical_and(_has_id(riff, 0, "RIFF"), _has_id(riff, 8, "WAVE"))  # []
        # A file cut inside its first 12 bytes that still starts like "RIFF" is truncated, not "not WAV".
        riff_prefix = tf.strings.substr(tf.constant(b"RIFF"), 0, tf.cast(tf.minimum(size, _U32), tf.int32))
        cut_in_riff_header = tf.logical_and(
            tf.equal(tf.strings.substr(contents, 0, _U32), riff_prefix), size < _RIFF_HEADER_BYTES)  # []

        none = tf.constant(-1, tf.int64)

        def cond(pos, fmt_pos, fmt_size, data_pos, data_size):
            found_both = tf.logical_and(fmt_pos >= 0, data_pos >= 0)
            return tf.logical_and(pos + _CHUNK_HEADER_BYTES <= size, tf.logical_not(found_both))

        def body(pos, fmt_pos, fmt_size, data_pos, data_size):
            chunk = _read_bytes(contents, pos, _CHUNK_HEADER_BYTES)  # [8]
            chunk_size = _le_uint(chunk, _U32, _U32)  # after the 4-byte id  # []
            body_pos = pos + _CHUNK_HEADER_BYTES
            first_fmt = tf.logical_and(_has_id(chunk, 0, "fmt "), fmt_pos < 0)
            first_data = tf.logical_and(_has_id(chunk, 0, "data"), data_pos < 0)
            fmt_pos = tf.where(first_fmt, body_pos, fmt_pos)
            fmt_size = tf.where(first_fmt, chunk_size, fmt_size)
            data_pos = tf.where(first_data, body_pos, data_pos)
            data_size = tf.where(first_data, chunk_size, data_size)
            next_pos = body_pos + chunk_size + chunk_size % 2  # odd chunks carry a pad byte
            return next_pos, fmt_pos, fmt_size, data_pos, data_size

        # Fast path for the usual layout: "fmt " first, its (even) body, then "data", all in
        # `head`. Found, the chunk walk below starts with both and runs no step.
        first_size = _le_uint(head, _FIRST_CHUNK + _U32, _U32)  # []
        fmt_first = tf.logical_and(_has_id(head, _FIRST_CHUNK, "fmt "),
                                   tf.logical_and(first_size <= _FMT_READ_BYTES, first_size % 2 == 0))
        second = tf.slice(head, [_FIRST_BODY + tf.where(fmt_first, first_size, 0)],
                          [_CHUNK_HEADER_BYTES])  # [8]
        usual = tf.logical_and(fmt_first, _has_id(second, 0, "data"))  # []
        start = (tf.constant(_RIFF_HEADER_BYTES, tf.int64), none, none, none, none)
        found = (none, tf.constant(_FIRST_BODY, tf.int64), first_size,
                 _FIRST_BODY + first_size + _CHUNK_HEADER_BYTES, _le_uint(second, _U32, _U32))
        start = tuple(tf.where(usual, a, b) for a, b in zip(found, start))  # each [] int64
        _, fmt_pos, fmt_size, data_pos, data_size = tf.while_loop(cond, body, start)  # each [] int64

        fmt = _read_bytes(contents, fmt_pos, _FMT_READ_BYTES)  # [40], zeros past the file end
        tag = _le_uint(fmt, _FMT_TAG, _U16)
        channels = _le_uint(fmt, _FMT_CHANNELS, _U16)
        rate = _le_uint(fmt, _FMT_RATE, _U32)
        block_align = _le_uint(fmt, _FMT_BLOCK_ALIGN, _U16)
        bits = _le_uint(fmt, _FMT_BITS, _U16)
        extensible = tf.equal(tag, WAVE_FORMAT_EXTENSIBLE)
        tag = tf.where(extensible, _le_uint(fmt, _FMT_SUBFORMAT, _U16), tag)

        fmt_needed = tf.where(extensible, tf.constant(_FMT_EXTENSIBLE_BYTES, tf.int64),
                              tf.constant(_FMT_MIN_BYTES, tf.int64))
        fmt_ok = tf.logical_and(fmt_pos >= 0, fmt_size >= fmt_needed)
        fmt_ok = tf.logical_and(fmt_ok, fmt_pos + fmt_needed <= size)
        streamed = tf.logical_and(data_pos >= 0, tf.equal(data_size, STREAMED_SIZE))
        data_size = tf.where(streamed, size - data_pos, data_size)  # [] to the end of the file
        data_ok = tf.logical_and(data_pos >= 0, data_pos + data_size <= size)

        supported = tf.not_equal(_encoding_kind(tag, bits), _KIND_NONE)
        layout_ok = tf.logical_and(channels >= 1,
                                   tf.equal(block_align, channels * bits // _BITS_PER_BYTE))
        rate_ok = tf.logical_and(rate >= MIN_SAMPLE_RATE, rate <= MAX_SAMPLE_RATE)
        has_frames = data_size >= tf.maximum(block_align, 1)

        # First failing check wins, in this order.
        checks = [
            (tf.equal(size, 0), EMPTY),
            (cut_in_riff_header, TRUNCATED),
            (tf.logical_not(is_riff), NOT_WAV),
            (tf.logical_not(fmt_ok), TRUNCATED),
            (tf.logical_not(supported), UNSUPPORTED),
            (tf.logical_not(layout_ok), BAD_LAYOUT),
            (tf.logical_not(rate_ok), BAD_RATE),
            (tf.logical_not(data_ok), TRUNCATED),
            (tf.logical_not(has_frames), NO_SAMPLES),
        ]
        status = tf.constant(OK, tf.int32)
        for failed, code in reversed(checks):
            status = tf.where(failed, tf.constant(code, tf.int32), status)  # []
        return WavHeader(status, tag, channels, rate, bits, block_align, data_pos, data_size)


# ---------------------------------------------------------------------------------------------
# Sample decoding
# ---------------------------------------------------------------------------------------------
def _decode_samples(contents: tf.Tensor, header: WavHeader) -> tf.Tensor:
    """Decode the data chunk and mix it down to mono. ``[] string -> [n] float32``

    Returns an empty vector unless ``header.status`` is OK; the decoders never run on a bad file.
    """
    with tf.name_scope("decode_samples"):
        frames = header.data_size // tf.maximum(header.block_align, 1)  # [] whole frames only
        payload = tf.strings.substr(contents, tf.maximum(header.data_offset, 0),
                                    frames * header.block_align)  # [] string
        channels = tf.cast(tf.maximum(header.channels, 1), tf.int32)

        def to_float(ints: tf.Tensor, kind: int) -> tf.Tensor:
            return tf.cast(ints, tf.float32) * (1.0 / _FULL_SCALE[kind])  # [n * ch]

        def uint8():
            unsigned = tf.cast(tf.io.decode_raw(payload, tf.uint8), tf.int32)  # [n * ch]
            return to_float(unsigned - _UINT8_ZERO, _KIND_UINT8)  # [n * ch]

        def int16():
            return to_float(tf.io.decode_raw(payload, tf.int16, little_endian=True), _KIND_INT16)

        def int24():
            raw = tf.reshape(tf.io.decode_raw(payload, tf.uint8), [-1, _INT24_BYTES])  # [n * ch, 3]
            unsigned = tf.reduce_sum(tf.cast(raw, tf.int32) * _INT24_WEIGHTS, axis=1)  # [n * ch]
            signed = unsigned - tf.cast(unsigned >= _INT24_SIGN, tf.int32) * _INT24_RANGE
            return to_float(signed, _KIND_INT24)  # [n * ch]

        def int32():
            return to_float(tf.io.decode_raw(payload, tf.int32, little_endian=True), _KIND_INT32)

        def float32():
            return tf.io.decode_raw(payload, tf.float32, little_endian=True)  # [n * ch]

        def float64():  # beyond float32's range becomes +-inf, reported as NON_FINITE
            return tf.cast(tf.io.decode_raw(payload, tf.float64, little_endian=True), tf.float32)  # [n * ch]

        def nothing():
            return tf.zeros([0], tf.float32)

        kind = _encoding_kind(header.format_tag, header.bits_per_sample)  # []
        kind = tf.where(tf.equal(header.status, OK), kind, _KIND_NONE)  # [] branch index
        branches = {_KIND_UINT8: uint8, _KIND_INT16: int16, _KIND_INT24: int24, _KIND_INT32: int32,
                    _KIND_FLOAT32: float32, _KIND_FLOAT64: float64}
        flat = tf.switch_case(kind, branches, default=nothing)  # [n * ch]
        interleaved = tf.reshape(flat, [-1, channels])  # [n, ch]
        return tf.reduce_mean(interleaved, axis=1)  # [n]


def _resample(audio: tf.Tensor, rate_in: tf.Tensor, rate_out: int) -> tf.Tensor:
    """Resample with ``tfio.audio.resample``, undoing its delay. ``[n] -> [round(n * out / in)]``"""
    with tf.name_scope("resample"):
        rate_in = tf.cast(rate_in, tf.int64)
        rate_in_f = tf.cast(rate_in, tf.float64)
        rate_out_f = tf.constant(float(rate_out), tf.float64)
        lower = tf.minimum(rate_in_f, rate_out_f)
        n_in = tf.cast(tf.shape(audio)[0], tf.float64)
        keep = tf.cast(tf.round(n_in * rate_out_f / rate_in_f), tf.int32)  # [] output length
        drop = tf.cast(tf.round(RESAMPLE_DELAY * rate_out_f / lower), tf.int32)  # [] delay at rate_out
        # Zeros at the end so the delayed output still covers the last input sample (+2 spare).
        tail = tf.cast(tf.math.ceil(RESAMPLE_DELAY * rate_in_f / lower), tf.int32) + 2
        padded = tf.pad(audio, [[0, tail]])[:, tf.newaxis]  # [n + tail, 1]
        out = tfio.audio.resample(padded, rate_in=rate_in, rate_out=rate_out)[:, 0]  # [~(n+tail)·out/in]
        out = out[drop:drop + keep]  # [<= keep]
        return tf.pad(out, [[0, keep - tf.shape(out)[0]]])  # [keep]


def _fix_length(audio: tf.Tensor, num_samples: int) -> tf.Tensor:
    """The first ``num_samples`` of the audio repeated end to end (a longer one is trimmed, an
    empty one gives zeros). ``[n] -> [num_samples]``

    Repeating, not zero padding: a clip ending in digital silence is unlike every training clip
    (its spectral flatness alone sits millions of standard deviations from theirs), and the
    shipped model's accuracy on its training clips cut to 90 % falls from 0.90 to 0.67 with zeros,
    to 0.87 repeated (``benchmarks/short_clips.py``).
    """
    with tf.name_scope("fix_length"):
        audio = audio[:num_samples]  # [min(n, num_samples)]: a long recording is not copied whole
        copies = -(-num_samples // tf.maximum(tf.shape(audio)[0], 1))  # [] ceil(num_samples / n)
        audio = tf.tile(audio, [copies])[:num_samples]  # [num_samples], or [0] when empty
        audio = tf.pad(audio, [[0, num_samples - tf.shape(audio)[0]]])  # zeros only for an empty one
        return tf.ensure_shape(audio, [num_samples])


def _check_args(target_rate: int | None, num_samples: int | None) -> None:
    if target_rate is not None and not MIN_SAMPLE_RATE <= int(target_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(f"target_rate must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], got {target_rate!r}")
    if num_samples is not None and int(num_samples) <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples!r}")


@tf.autograph.experimental.do_not_convert
def decode_wav(contents: tf.Tensor, target_rate: int | None,
               num_samples: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode a whole WAV file's bytes to mono float32, in-graph. ``[] string -> ([n] float32, [] int32)``

    ``target_rate`` (Python int) resamples to that rate; ``None`` keeps the file's own rate (use
    ``parse_wav_header(contents).sample_rate`` to learn it). ``num_samples`` (Python int) trims
    (keeping the start) or repeats a shorter file end to end to that fixed length, giving a
    static shape.

    Returns ``(audio, status)``. When ``status != OK`` the audio is all zeros, of length
    ``num_samples`` (or empty when ``num_samples`` is None), so elements still batch and the
    caller can filter on ``status``.
    """
    _check_args(target_rate, num_samples)
    with tf.name_scope("decode_wav"):
        contents = tf.convert_to_tensor(contents, tf.string)
        header = parse_wav_header(contents)
        audio = _decode_samples(contents, header)  # [n] at the native rate, empty unless OK

        status = header.status
        peak = tf.reduce_max(tf.abs(audio))  # [] (-inf when empty, i.e. status already bad)
        finite = tf.reduce_all(tf.math.is_finite(audio))  # []
        status = tf.where(tf.logical_and(tf.equal(status, OK), tf.logical_not(finite)),
                          tf.constant(NON_FINITE), status)
        status = tf.where(tf.logical_and(tf.equal(status, OK), peak < SILENCE_PEAK),
                          tf.constant(SILENT), status)  # []
        ok = tf.equal(status, OK)

        if target_rate is not None:
            needs_resample = tf.logical_and(ok, tf.not_equal(header.sample_rate, target_rate))
            audio = tf.cond(needs_resample,
                            lambda: _resample(audio, header.sample_rate, int(target_rate)),
                            lambda: audio)  # [round(n * target / native)]
            status = tf.where(tf.logical_and(ok, tf.equal(tf.size(audio), 0)), tf.constant(TOO_SHORT), status)
            ok = tf.equal(status, OK)  # a frame or two at 48 kHz can round to no sample at 16 kHz

        audio = tf.cond(ok, lambda: audio, lambda: tf.zeros([0], tf.float32))  # [n], or [0] if bad
        if num_samples is not None:
            audio = _fix_length(audio, int(num_samples))  # [num_samples]
        return audio, status


@tf.autograph.experimental.do_not_convert
def read_wav(path: tf.Tensor, target_rate: int | None, num_samples: int | None = None,
             readable: tf.Tensor | bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.io.read_file`` + ``decode_wav``, for ``Dataset.map``. ``[] string, [] bool -> ([n], [])``

    ``readable`` is ``is_readable(path)``, worked out in Python: when False the file is not read
    (``tf.io.read_file`` would raise on a folder or a file without read permission) and the
    status is UNREADABLE. A file that vanishes or turns unreadable after that check is an op
    error, as with any ``tf.io.read_file``; every other problem is a status code.
    """
    with tf.name_scope("read_wav"):
        readable = tf.convert_to_tensor(readable, tf.bool)  # []
        contents = tf.cond(readable, lambda: tf.io.read_file(path), lambda: tf.constant(b""))  # []
        audio, status = decode_wav(contents, target_rate, num_samples)  # [n], []
        return audio, tf.where(readable, status, tf.constant(UNREADABLE))


def _read_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None: missing, a folder, not a regular file, or refused."""
    if path.is_dir():
        return "is a folder, not a WAV file"
    if not path.exists():
        return "file not found"
    if not path.is_file():  # a FIFO or device: opening it could block
        return "not a regular file"
    try:
        with path.open("rb"):
            return None
    except OSError as err:
        return f"cannot be read ({(err.strerror or type(err).__name__).lower()})"


def is_readable(path: str | Path) -> bool:
    """Whether ``path`` is a regular file this process may open for reading (``read_wav``'s ``readable``)."""
    return _read_problem(Path(path)) is None


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------
def _detail(code: int, header: WavHeader) -> str:
    """``status_message`` plus what the header said, for the Python error message."""
    message = status_message(code)
    tag, bits, channels = int(header.format_tag), int(header.bits_per_sample), int(header.channels)
    if code == UNSUPPORTED:
        name = f" ({FORMAT_NAMES[tag]})" if tag in FORMAT_NAMES else ""
        return f"{message} (got format tag {tag}{name}, {bits}-bit, {channels} channel(s))"
    if code == BAD_LAYOUT:
        return f"{message} (got {channels} channel(s), {bits}-bit, block_align {int(header.block_align)})"
    if code == BAD_RATE:
        return f"{message} (got {int(header.sample_rate)} Hz)"
    return message


def load_audio(path: str | Path, sample_rate: int | None = 16000,
               duration_s: float | None = None) -> np.ndarray:
    """Load one WAV file as mono float32 ``[n]`` numpy audio.

    ``sample_rate=None`` keeps the file's rate; ``duration_s`` trims or repeats (as ``decode_wav``)
    to ``round(rate * duration_s)`` samples. Raises ``AudioError("<path>: <problem>")`` for a
    missing, unreadable or non-file path and for every status other than OK.
    """
    path = Path(path)
    problem = _read_problem(path)
    if problem is not None:
        raise AudioError(f"{path}: {problem}")
    try:
        contents = tf.constant(path.read_bytes())
    except OSError:  # gone or locked since the check
        raise AudioError(f"{path}: {_read_problem(path) or 'cannot be read'}") from None
    header = parse_wav_header(contents)
    code = int(header.status)
    if code != OK:
        raise AudioError(f"{path}: {_detail(code, header)}")
    rate = int(header.sample_rate) if sample_rate is None else int(sample_rate)
    num_samples = None if duration_s is None else int(round(rate * duration_s))
    audio, status = decode_wav(contents, sample_rate, num_samples)
    if int(status) != OK:
        raise AudioError(f"{path}: {_detail(int(status), header)}")
    return audio.numpy()

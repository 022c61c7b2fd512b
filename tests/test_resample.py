import av
import numpy as np

from agent.audio.resample import Resampler, resample_once, to_float, to_int16


def tone(freq: float, seconds: float, rate: int, amplitude: int = 10_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_opus_style_48k_stereo_frames_become_16k_mono_with_pitch_and_length_kept():
    mono = tone(440, 1.0, 48_000)
    stereo = np.repeat(mono, 2)  # interleaved L/R, as aiortc decodes Opus
    resampler = Resampler(16_000)
    out = []
    for start in range(0, len(stereo), 1920):
        frame = av.AudioFrame.from_ndarray(
            stereo[start : start + 1920].reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48_000
        frame.pts = start // 2
        out.append(resampler.frame(frame))
    out.append(resampler.flush())
    result = np.concatenate(out)
    assert abs(len(result) - 16_000) <= 20
    assert abs(dominant_frequency(result, 16_000) - 440) < 3
    assert 9_000 < np.abs(result[1000:-1000]).max() < 10_500  # level kept, channels averaged not summed


def test_streamed_chunks_join_without_a_click_at_the_boundaries():
    source = tone(300, 0.5, 22_050)
    resampler = Resampler(48_000)
    pieces = [resampler.samples(to_float(source[i : i + 1000]), 22_050) for i in range(0, len(source), 1000)]
    joined = np.concatenate(pieces + [resampler.flush()])
    whole = resample_once(source, 22_050, 48_000)
    assert abs(len(joined) - len(whole)) <= 2
    # a click would show as a sample-to-sample jump far above the tone's own slope
    max_step = 2 * np.pi * 300 / 48_000 * 10_000
    assert np.abs(np.diff(joined[200:-200].astype(np.int32))).max() < 1.5 * max_step


def test_float_and_int16_conversions_round_trip_and_clip():
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    assert np.array_equal(to_int16(to_float(samples)), samples)
    assert to_int16(np.array([2.0, -2.0], dtype=np.float32)).tolist() == [32767, -32768]

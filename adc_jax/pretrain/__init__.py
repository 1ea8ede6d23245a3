"""BYOL-A self-supervised pretraining of the AudioNTT2020 encoder (`python -m adc_jax.pretrain`).

config.py    defaults, size presets and validation of pretraining configs
clips.py     the clips it trains on: built-in synthetic clips or a folder of audio files
augment.py   BYOL-A's augmentations of log-mel segments, on the device
step.py      the train state (online + EMA target, optimizer, mixup memory) and the jitted step
train.py     the run: init or restore, the step loop, the encoder export
__main__.py  the command line
"""

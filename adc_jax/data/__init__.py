"""The captioner's data: tfds datasets of audio pairs and the grain streams that read them.

synthetic/        the built-in synthetic_adc set: sounds, scenes (planning and mixing a pair),
                  grammar (captions and their parser), builder (the tfds builder)
builder.py        the one base of every tfds builder here (and of pretraining's clips)
audiodiffcaps.py, adiff.py, clip_pairs.py   one module per real dataset, on that base;
clip_sources.py   the recordings clip_pairs mixes: layouts, classes, splits
registry.py       data.name -> the dataset's loader; the data directory
features.py       the record schema every pair dataset writes
writer.py         the array_record writer of every builder (no TensorFlow)
caption_file.py   a built split's keys and captions beside its records: start-up reads no audio
paths.py          remote paths (gs://): which settings take one, the refusal naming the others
audio_io.py       reading audio files; waveform.py: the one pad/crop to the clip length
tokenizer.py      the word-level Vocabulary (pure Python: the models import its ids)
vocab.py          a split's captions, the run's vocabulary and the caption tiers
eval_split.py     a split loaded for evaluation
pipeline.py       the grain streams: training batches (length buckets too) and eval batches
random_batch.py   random batches in the pipeline's format, for tests and benchmarks

Nothing is imported here: the models and the metrics import single modules without the rest.
"""

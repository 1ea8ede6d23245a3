"""The built-in synthetic_adc dataset, one file per job.

  sounds.py   synthesis of the two background scenes and the ten event classes.
  scenes.py   planning and mixing one pair (scene, edits, waveforms, captions); also the planner
              of the clip_pairs dataset and of the single-event clips.
  grammar.py  the caption grammar and the parser that reads captions back into edits.
  builder.py  the tfds builder, the spec of a variant and the build lock.

Nothing is imported here: the metrics read `grammar` without loading tfds.
"""

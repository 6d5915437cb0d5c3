"""Every on-disk layout sepcluster reads, and their constants: the bottom layer of the jobs.

Layouts (one module each):

* ``library``: a stem library, Scaper's ``STEMS/foreground/<label>/<song>.wav`` (+ ``library.json``),
  or a folder of track folders ``<song>/<label>.wav``;
* ``musdb``: a MUSDB18 root (``<subset>/<track>.stem.mp4``) or MUSDB18-HQ root
  (``<subset>/<track>/{mixture,vocals,drums,bass,other}.wav``);
* ``folders``: a catalog folder of audio files (recursive) and track folders
  ``<track>/<target>.<ext>`` (separated stems, references);
* ``manifest``: a Parquet or CSV manifest of audio URIs;
* ``mixtures``: a mixture dataset written by ``sepcluster generate`` (``_dataset.json`` +
  ``shard-*.parquet``);
* ``moisesdb``: a MoisesDB root (``<provider>/<uuid>/data.json``; stems made of several source
  files, summed into targets by a label map: MUSDB's four by default, or a YAML mapping).

The jobs import from here, never from each other's internals; this package imports only the
project's bottom modules (``storage``, ``audio``, ``errors``, ``config``).
"""

from __future__ import annotations

# The four sources of MUSDB18 in musdb's order (its mus.yaml), and the stems made from them.
MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
DERIVED_TARGETS = ("accompaniment", "linear_mixture")  # sums of the sources, not stems of their own
# Seeds are numpy RandomState seeds (Scaper's): 0 .. 2**32 - 1.
MAX_SEED = 2 ** 32 - 1

"""``rsdet predict``: a trained run's detector on image files (:mod:`rsdet.predict.model` loads it
without trusting the run folder, :mod:`rsdet.predict.images` reads the inputs and the ``--gt`` file,
:mod:`rsdet.predict.cli` draws and writes). docs/visualisation.md."""

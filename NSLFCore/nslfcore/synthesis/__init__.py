"""The synthesis engine: training cases for real MRI, drawn from label maps (after SynthSeg).

A model trained on one generator's images learns that generator. Real scans vary in contrast,
resolution, artefacts and anatomy, and hold normal structures that look like tumour; so this
engine draws a label map (:mod:`~nslfcore.synthesis.label_map`: deformed MNI152 anatomy with
vessels, sinuses, choroid plexus, white-matter hyperintensities and skull-stripping residue, and
one of four tumour types) and then images from it with every property a scanner varies in
randomised (:mod:`~nslfcore.synthesis.intensities`, :mod:`~nslfcore.synthesis.acquisition`), keeping
only the intensity orderings a radiologist relies on (:data:`~nslfcore.synthesis.labels.ORDERINGS`).

Modules, one job each:

* :mod:`~nslfcore.synthesis.labels` -- the label set, the training target, the orderings kept;
* :mod:`~nslfcore.synthesis.anatomy` -- tissue labels and the look-alike structures;
* :mod:`~nslfcore.synthesis.tumours` -- the tumour types;
* :mod:`~nslfcore.synthesis.label_map` -- one label map from a seed;
* :mod:`~nslfcore.synthesis.deformation` -- random affine and elastic warps of a label map (torch);
* :mod:`~nslfcore.synthesis.intensities` -- per-label, per-sequence contrast, texture, partial volume (torch);
* :mod:`~nslfcore.synthesis.acquisition` -- slice thickness, blur, bias, noise, ghosting, scanner units (torch);
* :mod:`~nslfcore.synthesis.generator` -- the whole case (:func:`synthesise_case`), deterministic per seed.

Arrays are ``(z, y, x)`` (channel first where there is one); geometry ``(x, y, z)``, mm, LPS.
"""

"""mfld.validation: the theory checked numerically (checks/) and the paper's experiments reproduced (experiments/)."""

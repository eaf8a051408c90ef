"""Files: circuit YAML (:mod:`neurosim.io.yaml`) and HDF5 results (:mod:`neurosim.io.hdf5`)."""

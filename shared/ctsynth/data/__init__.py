"""CT data: LIDC-IDRI and DICOM reading, phantoms, preprocessing, HDF5 datasets."""

"""`make bench`: speed, scale and accuracy of the unit, beside the peer `face_recognition`, in one run."""

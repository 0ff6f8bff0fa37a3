"""Brief Hospital Course (BHC) summarisation benchmark from MIMIC-IV discharge summaries (Aali et al. 2024): the
section split (`sections`), the dataset builder (`prepare`, `cmbert bhc prepare`), and the summariser and evaluator
beside them."""

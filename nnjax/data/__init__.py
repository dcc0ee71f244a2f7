"""Data sets and batching. Each data set lives in its own module and imports heavy
libraries (tensorflow-datasets, grain, transformers) only inside the functions that use them."""

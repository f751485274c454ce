"""The logic behind each module action; `imageroot/actions/<name>/NN<step>`
files are one-line entry points into these modules."""

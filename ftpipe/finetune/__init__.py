"""The fine-tune lifecycle: upload training files, launch jobs once, wait for them."""

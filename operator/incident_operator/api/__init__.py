"""The API: the kinds' models, keys, reasons and the CRDs generated from them. Pure; imports nothing above."""

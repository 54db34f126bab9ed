"""yfpo.pairs"""

"""yfpo.eval"""

"""yfpo.train"""

"""yfpo.neurons"""

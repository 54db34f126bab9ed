"""yfpo.report"""

"""Reports over a resolved environment: the compliance report (plain data) and its views.

Example::

    from mlspec.app.project import Project
    from mlspec.report.compliance import build_compliance
    from mlspec.report.views import render_markdown

    report = build_compliance(Project.open("."), "prod")
    print(render_markdown(report))
"""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home),
    path("login/", views.login),
    path("logout/", views.logout),
    path("api/me", views.me),
    path("magic/", views.magic),
    path("settings/password/", views.change_password),
    path("settings/password/count/", views.password_change_count),
]

from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views
from .login import LoginView

app_name = "cockpit"

subaccount = [
    path("", views.overview, name="overview"),
    path("entitlements/", views.entitlements, name="entitlements"),
    path("entitlements/<int:entitlement_id>/quota", views.entitlement_change, name="entitlement-change"),
    path("entitlements/<int:entitlement_id>/delete", views.entitlement_remove, name="entitlement-delete"),
    path("instances/", views.instances, name="instances"),
    path("instances/new", views.instance_new, name="instance-new"),
    path("instances/parameters-check", views.parameters_check, name="parameters-check"),
    path("instances/<uuid:instance_id>/", views.instance_detail, name="instance"),
    path("instances/<uuid:instance_id>/delete", views.instance_remove, name="instance-delete"),
    path("instances/<uuid:instance_id>/keys/new", views.key_new, name="key-new"),
    path("instances/<uuid:instance_id>/keys/<int:key_id>/", views.key_detail, name="key"),
    path("instances/<uuid:instance_id>/keys/<int:key_id>/rotate", views.key_rotate, name="key-rotate"),
    path("instances/<uuid:instance_id>/keys/<int:key_id>/delete", views.key_remove, name="key-delete"),
    path("members/", views.members, name="members"),
    path("members/<int:membership_id>/delete", views.member_remove, name="member-delete"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("subaccounts/<int:subaccount_id>/", include(subaccount)),
]
